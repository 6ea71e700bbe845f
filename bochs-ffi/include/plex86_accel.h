/*
 * plex86-accel: the C ABI between Bochs (built with --enable-plex86-accel) and the accelerator
 * library (accel-core). This header is the ABI's one source of truth: Bochs includes it, and the
 * Rust side's types are generated from it with bindgen (bochs-ffi/src/bindings.rs).
 *
 * Any change to a type or function here that is not purely additive bumps
 * PLEX86_ACCEL_ABI_VERSION; Bochs refuses a library whose version differs from the one it was
 * built with.
 */
#ifndef PLEX86_ACCEL_H
#define PLEX86_ACCEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Version of this interface. */
#define PLEX86_ACCEL_ABI_VERSION 1u

/* The one symbol Bochs resolves first, to learn the library's ABI version. */
#define PLEX86_ACCEL_VERSION_SYMBOL "plex86_accel_abi_version"

/* Returns PLEX86_ACCEL_ABI_VERSION as the library was built. */
uint32_t plex86_accel_abi_version(void);

#ifdef __cplusplus
}
#endif

#endif /* PLEX86_ACCEL_H */
