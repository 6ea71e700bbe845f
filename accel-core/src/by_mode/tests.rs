//! The routing and the mirror bookkeeping of [`ByMode`] over two recording fakes.

use super::*;
use host_driver::ExitReason;
use std::sync::{Arc, Mutex};
use test_support::guest_state::layouts;
use MmuCommand::*;

/// What a fake was sent, run by run, and how often it was respawned.
#[derive(Default)]
struct Record {
    runs: Vec<Vec<MmuCommand>>,
    respawns: usize,
}

struct Fake {
    which: Which,
    xs: XsaveInfo,
    record: Arc<Mutex<Record>>,
    exit: ExitRecord,
    /// Code pages the next run reports written.
    written: Vec<u64>,
    /// The next run is refused before anything is sent.
    refuse: bool,
}

impl Fake {
    fn new(which: Which) -> (Self, Arc<Mutex<Record>>) {
        let record = Arc::new(Mutex::new(Record::default()));
        let f = Fake {
            which,
            xs: layouts::AMD,
            record: Arc::clone(&record),
            exit: ExitRecord::new(ExitReason::BudgetExpired),
            written: Vec::new(),
            refuse: false,
        };
        (f, record)
    }
}

impl Backend for Fake {
    fn xsave_info(&self) -> XsaveInfo {
        self.xs
    }
    fn run(
        &mut self,
        _state: &mut GuestState,
        _budget: Duration,
        commands: &[MmuCommand],
    ) -> Result<&ExitRecord, DriverError> {
        if std::mem::take(&mut self.refuse) {
            return Err(DriverError::UnsupportedState("refused".into()));
        }
        self.record.lock().unwrap().runs.push(commands.to_vec());
        self.exit = ExitRecord::new(ExitReason::BudgetExpired);
        for p in self.written.drain(..) {
            self.exit.code_pages.push(p).unwrap();
        }
        Ok(&self.exit)
    }
    fn respawn(&mut self, _ram_map: &[Range<u64>]) -> Result<(), String> {
        self.record.lock().unwrap().respawns += 1;
        Ok(())
    }
    fn describe(&self) -> String {
        format!("fake {}", self.which.name())
    }
    fn ran_on(&self) -> Which {
        self.which
    }
}

struct T {
    b: ByMode<Fake, Fake>,
    exec: Arc<Mutex<Record>>,
    stub: Arc<Mutex<Record>>,
    starts: Arc<Mutex<Vec<Vec<Range<u64>>>>>,
}

/// A ByMode whose stub starts as `stub` says (`Err`: the start fails with that message).
fn by_mode_with(stub_xs: XsaveInfo, start_error: Option<&'static str>) -> T {
    let (exec, exec_rec) = Fake::new(Which::Executor);
    let (mut stub, stub_rec) = Fake::new(Which::Stub);
    stub.xs = stub_xs;
    let starts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&starts);
    let mut stub = Some(stub);
    let start: StartStub<Fake, Fake> = Box::new(move |exec, map| {
        assert_eq!(exec.which, Which::Executor, "started next to the executor");
        seen.lock().unwrap().push(map.to_vec());
        match start_error {
            Some(e) => Err(e.to_string()),
            None => stub.take().ok_or_else(|| "started twice".to_string()),
        }
    });
    T {
        b: ByMode::new(exec, map(1 << 20), start),
        exec: exec_rec,
        stub: stub_rec,
        starts,
    }
}

/// A plain-RAM map of one range from 0.
fn map(end: u64) -> Vec<Range<u64>> {
    std::iter::once(0..end).collect()
}

fn by_mode() -> T {
    by_mode_with(layouts::AMD, None)
}

fn state(code64: bool) -> GuestState {
    let mut gs = GuestState::default();
    if code64 {
        gs.efer = 0x500;
        gs.segs[host_driver::protocol::seg::CS].attr |= 1 << 13; // CS.L
    }
    gs
}

/// Prepares and runs a state of the mode, with `commands`.
fn run(t: &mut T, code64: bool, commands: &[MmuCommand]) -> Result<(), DriverError> {
    let mut gs = state(code64);
    t.b.prepare(&gs).map_err(DriverError::UnsupportedState)?;
    t.b.run(&mut gs, Duration::from_millis(1), commands)
        .map(|_| ())
}

fn sent(r: &Arc<Mutex<Record>>) -> Vec<Vec<MmuCommand>> {
    r.lock().unwrap().runs.clone()
}

#[test]
fn the_states_are_what_the_routing_assumes() {
    assert!(state(true).code64() && !state(false).code64());
}

#[test]
fn the_stub_starts_at_the_first_64bit_entry_only() {
    let mut t = by_mode();
    assert_eq!(t.b.code_modes(), CodeModes::Legacy32Long64AndCompat);
    assert!(t
        .b
        .describe()
        .ends_with("for long-mode code (64-bit and compatibility mode) the stub executor at the first long-mode entry"));
    assert_eq!(t.b.prepare(&state(false)), Ok(None));
    run(&mut t, false, &[]).unwrap();
    assert!(t.b.stub().is_none() && t.starts.lock().unwrap().is_empty());
    assert_eq!(t.b.ran_on(), Which::Executor);
    assert_eq!(
        t.b.prepare(&state(true)),
        Ok(Some("long-mode code: started the fake stub".into()))
    );
    assert_eq!(t.b.prepare(&state(true)), Ok(None), "started once");
    run(&mut t, true, &[]).unwrap();
    assert_eq!(t.b.ran_on(), Which::Stub);
    assert_eq!((sent(&t.exec).len(), sent(&t.stub).len()), (1, 1));
    assert!(t
        .b
        .describe()
        .ends_with("for long-mode code (64-bit and compatibility mode) fake stub"));
}

/// Compatibility-mode code (long mode, CS.L=0) goes to the stub too: today's executor cannot
/// walk long mode's tables. It starts the stub as 64-bit code would, and runs switching
/// between the two modes in one address space stay on the stub (no flush).
#[test]
fn compat_code_starts_and_runs_on_the_stub() {
    let mut t = by_mode();
    let mut compat = GuestState {
        efer: 0x500,
        ..GuestState::default()
    };
    assert!(compat.long_mode() && !compat.code64());
    assert_eq!(
        t.b.prepare(&compat),
        Ok(Some("long-mode code: started the fake stub".into()))
    );
    t.b.run(&mut compat, Duration::from_millis(1), &[]).unwrap();
    assert_eq!(t.b.ran_on(), Which::Stub);
    run(&mut t, true, &[]).unwrap();
    t.b.run(&mut compat, Duration::from_millis(1), &[]).unwrap();
    assert_eq!(sent(&t.exec).len(), 0, "today's executor ran nothing");
    assert_eq!(
        sent(&t.stub),
        vec![vec![]; 3],
        "three runs, no flush between them"
    );
}

#[test]
fn a_64bit_run_without_a_started_stub_is_refused_not_run() {
    let mut t = by_mode();
    let mut gs = state(true);
    let e = t.b.run(&mut gs, Duration::from_millis(1), &[]).unwrap_err();
    assert!(matches!(e, DriverError::UnsupportedState(_)), "{e}");
    assert!(!t.b.failed_run_may_have_executed());
}

#[test]
fn a_stub_that_cannot_start_or_disagrees_says_why() {
    let mut t = by_mode_with(layouts::AMD, Some("no stub here"));
    assert_eq!(
        t.b.prepare(&state(true)),
        Err("the stub executor for long-mode code cannot start: no stub here".into())
    );
    assert!(t.b.stub().is_none());
    let mut other = layouts::AMD;
    other.size += 64;
    let mut t = by_mode_with(other, None);
    let e = t.b.prepare(&state(true)).unwrap_err();
    assert!(
        e.starts_with("the stub executor for long-mode code cannot start: its XSAVE layout")
            && e.contains("executor's"),
        "{e}"
    );
    assert!(t.b.stub().is_none(), "a disagreeing stub is not kept");
}

#[test]
fn the_stub_starts_on_the_current_memory_map() {
    let mut t = by_mode();
    t.b.respawn(&map(0xa0000)).unwrap();
    t.b.prepare(&state(true)).unwrap();
    assert_eq!(*t.starts.lock().unwrap(), vec![map(0xa0000)]);
    assert_eq!(t.exec.lock().unwrap().respawns, 1);
    t.b.respawn(&map(1 << 20)).unwrap();
    assert_eq!(
        t.stub.lock().unwrap().respawns,
        1,
        "a started stub follows the map"
    );
}

#[test]
fn a_fresh_stub_gets_every_protection_sent_so_far_and_no_flush() {
    let mut t = by_mode();
    run(&mut t, false, &[FlushAll, WriteProtectPhysPage(0x1000)]).unwrap();
    run(
        &mut t,
        false,
        &[InvalidatePage(0x4000), WriteProtectPhysPage(0x2000)],
    )
    .unwrap();
    run(&mut t, true, &[InvalidatePage(0x5000)]).unwrap();
    let mut first = sent(&t.stub)[0].clone();
    first.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        first,
        [
            InvalidatePage(0x5000),
            WriteProtectPhysPage(0x1000),
            WriteProtectPhysPage(0x2000)
        ]
    );
    // Delivered: the next stub run sends only the accelerator's commands.
    run(&mut t, true, &[InvalidatePage(0x6000)]).unwrap();
    assert_eq!(sent(&t.stub)[1], [InvalidatePage(0x6000)]);
}

#[test]
fn switching_back_flushes_the_executor_that_missed_commands() {
    let mut t = by_mode();
    run(&mut t, false, &[]).unwrap();
    // While the stub runs, the executor misses an INVLPG and a protection.
    run(
        &mut t,
        true,
        &[InvalidatePage(0x7000), WriteProtectPhysPage(0x3000)],
    )
    .unwrap();
    run(&mut t, true, &[]).unwrap();
    run(&mut t, false, &[InvalidatePage(0x8000)]).unwrap();
    assert_eq!(
        sent(&t.exec)[1],
        [
            FlushAll,
            InvalidatePage(0x8000),
            WriteProtectPhysPage(0x3000)
        ]
    );
    // No switch, nothing missed: nothing added.
    run(&mut t, false, &[]).unwrap();
    assert_eq!(sent(&t.exec)[2], []);
    // And the stub, which ran before, is flushed when runs come back to it.
    run(&mut t, true, &[]).unwrap();
    assert_eq!(sent(&t.stub)[2], [FlushAll]);
}

#[test]
fn a_page_written_natively_needs_no_protection_on_the_other_executor() {
    let mut t = by_mode();
    run(
        &mut t,
        false,
        &[WriteProtectPhysPage(0x1000), WriteProtectPhysPage(0x2000)],
    )
    .unwrap();
    t.b.exec.written = vec![0x1000];
    run(&mut t, false, &[]).unwrap();
    run(&mut t, true, &[]).unwrap();
    assert_eq!(sent(&t.stub)[0], [WriteProtectPhysPage(0x2000)]);
}

#[test]
fn a_refused_run_changes_nothing() {
    let mut t = by_mode();
    run(&mut t, false, &[WriteProtectPhysPage(0x1000)]).unwrap();
    run(&mut t, true, &[]).unwrap();
    t.b.exec.refuse = true;
    let e = run(&mut t, false, &[WriteProtectPhysPage(0x2000)]).unwrap_err();
    assert!(matches!(e, DriverError::UnsupportedState(_)));
    assert_eq!(t.b.ran_on(), Which::Executor, "the attempt");
    // The accelerator sends its queue again; the flush is still owed, the protection not
    // passed on to the stub.
    run(&mut t, false, &[WriteProtectPhysPage(0x2000)]).unwrap();
    assert_eq!(sent(&t.exec)[1], [FlushAll, WriteProtectPhysPage(0x2000)]);
    run(&mut t, true, &[]).unwrap();
    assert_eq!(sent(&t.stub)[1], [FlushAll, WriteProtectPhysPage(0x2000)]);
}

#[test]
fn after_a_respawn_nothing_is_owed() {
    let mut t = by_mode();
    run(&mut t, false, &[WriteProtectPhysPage(0x1000)]).unwrap();
    run(&mut t, true, &[]).unwrap();
    run(&mut t, false, &[WriteProtectPhysPage(0x2000)]).unwrap();
    t.b.respawn(&map(1 << 20)).unwrap();
    // Both fresh: no flush, and the accelerator queues every protection again itself.
    run(&mut t, true, &[WriteProtectPhysPage(0x1000)]).unwrap();
    assert_eq!(
        sent(&t.stub).last().unwrap(),
        &[WriteProtectPhysPage(0x1000)]
    );
    run(&mut t, false, &[]).unwrap();
    assert_eq!(
        sent(&t.exec).last().unwrap(),
        &[WriteProtectPhysPage(0x1000)]
    );
}
