/*
 * threads: POSIX threads with __thread TLS (dynamically linked).
 *
 * Several threads, each with its own TLS values (initialised image and
 * zero-initialised TLS, checked for isolation), a mutex-protected counter,
 * atomic counters, a condition-variable token ring that fixes the order
 * of a log, a barrier, pthread_once, thread-specific data with
 * destructors, and join return values.  Everything summed is
 * independent of scheduling.
 */
#define _GNU_SOURCE
#include "common.h"
#include <pthread.h>
#include <sched.h>

#define NT 4
#define ROUNDS 150
#define INCS 20000

static __thread int tls_init = 5;
static __thread uint32_t tls_acc;
static __thread char tls_name[16] = "main";

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t bar;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static int once_count, dtor_count;
static uint32_t locked_counter, atomic_counter;
static int turn;
static int ring_log[NT * ROUNDS];
static int ring_n;
static void *tls_addr[NT];
static volatile int failures;

static void once_fn(void) { once_count++; }
static void key_dtor(void *p)
{
    pthread_mutex_lock(&mu);
    dtor_count += (int)(intptr_t)p;
    pthread_mutex_unlock(&mu);
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    if (tls_init != 5 || tls_acc != 0 || strcmp(tls_name, "main") != 0) failures++;
    tls_init = 1000 * (id + 1);
    snprintf(tls_name, sizeof tls_name, "t%d", id);
    tls_addr[id] = &tls_init;
    pthread_once(&once, once_fn);
    pthread_setspecific(key, (void *)(intptr_t)(id + 1));

    pthread_barrier_wait(&bar);
    for (int i = 0; i < INCS; i++) {
        pthread_mutex_lock(&mu);
        locked_counter += (uint32_t)(id + 1);
        pthread_mutex_unlock(&mu);
        __atomic_fetch_add(&atomic_counter, 1u, __ATOMIC_SEQ_CST);
        tls_acc += (uint32_t)i ^ (uint32_t)id;
        if ((i & 4095) == 0) sched_yield();
    }
    pthread_barrier_wait(&bar);

    /* token ring: thread i runs only on its turn */
    for (int r = 0; r < ROUNDS; r++) {
        pthread_mutex_lock(&mu);
        while (turn != id) pthread_cond_wait(&cv, &mu);
        ring_log[ring_n++] = id * 1000 + r;
        turn = (turn + 1) % NT;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }

    /* TLS must still be ours */
    char want[16];
    snprintf(want, sizeof want, "t%d", id);
    if (tls_init != 1000 * (id + 1) || strcmp(tls_name, want) != 0) failures++;
    if ((intptr_t)pthread_getspecific(key) != id + 1) failures++;
    uint32_t expect = 0;
    for (int i = 0; i < INCS; i++) expect += (uint32_t)i ^ (uint32_t)id;
    if (tls_acc != expect) failures++;
    return (void *)(intptr_t)(tls_acc ^ (uint32_t)(id * 7));
}

int main(void)
{
    suite_init();
    ck_t ck;
    ck_init(&ck);
    pthread_t th[NT];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_barrier_init(&bar, NULL, NT);
    pthread_key_create(&key, key_dtor);
    tls_init = 77;            /* main's copy: not seen by new threads */
    for (int i = 0; i < NT; i++)
        if (pthread_create(&th[i], &attr, worker, (void *)(intptr_t)i)) fail("create");
    uint32_t joined = 0;
    for (int i = 0; i < NT; i++) {
        void *rv;
        if (pthread_join(th[i], &rv)) fail("join");
        joined += (uint32_t)(intptr_t)rv;
    }
    if (failures) fail("tls-%d", failures);
    if (tls_init != 77 || strcmp(tls_name, "main") != 0) fail("main-tls");
    for (int i = 0; i < NT; i++)
        for (int j = i + 1; j < NT; j++)
            if (tls_addr[i] == tls_addr[j]) fail("tls-shared");
    if (once_count != 1) fail("once");
    if (dtor_count != NT * (NT + 1) / 2) fail("key-dtor-%d", dtor_count);
    if (atomic_counter != NT * INCS) fail("atomic");
    if (locked_counter != INCS * NT * (NT + 1) / 2) fail("mutex");
    if (ring_n != NT * ROUNDS) fail("ring-count");
    for (int k = 0; k < NT * ROUNDS; k++)
        if (ring_log[k] != (k % NT) * 1000 + k / NT) fail("ring-order");
    ck_u32(&ck, joined);
    ck_u32(&ck, locked_counter);
    ck_u32(&ck, atomic_counter);
    ck_bytes(&ck, ring_log, sizeof ring_log);
    pthread_barrier_destroy(&bar);
    result_ck("threads", &ck);
    return 0;
}
