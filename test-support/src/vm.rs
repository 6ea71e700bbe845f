//! The host-driver tests' fixture: a guest RAM memfd with synthetic page tables and segment
//! state, an executor, and guest code assembled with iced-x86's CodeAssembler.

use host_driver::{
    DriverError, Executor, ExecutorConfig, ExitRecord, GuestRam, GuestState, MmuCommand,
    NativeExecutor, Segment, StubExecutor,
};
use iced_x86::code_asm::CodeAssembler;
use std::cell::Cell;
use std::time::Duration;

pub use crate::{cpuinfo, executor_path};

/// Guest selectors: CS = GDT index 3, data = index 4 (RPL 3).
pub const CS_SEL: u16 = 0x1b;
pub const DS_SEL: u16 = 0x23;
pub use crate::pagetables::layout::*;

pub use crate::pagetables::bits::*;
pub use crate::pagetables::Mode;
use crate::pagetables::PageTables;

/// Which executor runs the guest: today's (the monitor in the sandboxed process) or the stub
/// (the monitor in the library, guest code in a stub process).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    Today,
    Stub,
}

thread_local! {
    static KIND: Cell<ExecutorKind> = const { Cell::new(ExecutorKind::Today) };
}

/// The executor [`Vm::new`] and [`spawn`] start on this thread: today's unless a test runs
/// under [`with_executor`] (as every test of [`both_executors!`] does).
pub fn executor_kind() -> ExecutorKind {
    KIND.with(Cell::get)
}

/// Runs `f` with [`executor_kind`] set to `kind` (libtest runs each test on its own thread).
pub fn with_executor<R>(kind: ExecutorKind, f: impl FnOnce() -> R) -> R {
    let before = KIND.with(|k| k.replace(kind));
    let r = f();
    KIND.with(|k| k.set(before));
    r
}

/// Spawns the executor of [`executor_kind`] as `cfg` says.
pub fn try_spawn(cfg: ExecutorConfig<'_>) -> Result<Box<dyn NativeExecutor>, DriverError> {
    Ok(match executor_kind() {
        ExecutorKind::Today => Box::new(Executor::spawn(cfg)?),
        ExecutorKind::Stub => Box::new(StubExecutor::spawn(cfg)?),
    })
}

/// [`try_spawn`], which must succeed.
pub fn spawn(cfg: ExecutorConfig<'_>) -> Box<dyn NativeExecutor> {
    try_spawn(cfg).unwrap_or_else(|e| panic!("spawn {:?}: {e}", executor_kind()))
}

/// Defines each test once and runs it against both executors: `NAME::today` and `NAME::stub`
/// (the body sees [`executor_kind`], and [`Vm::new`] and [`spawn`] start that executor), so
/// that any divergence between them shows.
#[macro_export]
macro_rules! both_executors {
    ($($(#[doc = $doc:literal])* #[test] fn $name:ident() $body:block)*) => {$(
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body() $body
            #[test]
            fn today() {
                $crate::vm::with_executor($crate::vm::ExecutorKind::Today, body)
            }
            #[test]
            fn stub() {
                $crate::vm::with_executor($crate::vm::ExecutorKind::Stub, body)
            }
        }
    )*};
}

pub struct Vm {
    pub ram: GuestRam,
    pub exe: Box<dyn NativeExecutor>,
    pub state: GuestState,
    pub tables: PageTables,
}

impl Vm {
    pub fn new(mode: Mode) -> Vm {
        Self::with_ram_map(mode, std::iter::once(0..RAM_SIZE).collect())
    }

    pub fn with_ram_map(mode: Mode, map: Vec<std::ops::Range<u64>>) -> Vm {
        Self::build(mode, map, 0)
    }

    /// A VM whose runs end after `max_fills` demand fills.
    pub fn with_fill_limit(mode: Mode, max_fills: u32) -> Vm {
        Self::build(mode, std::iter::once(0..RAM_SIZE).collect(), max_fills)
    }

    fn build(mode: Mode, map: Vec<std::ops::Range<u64>>, max_fills: u32) -> Vm {
        let ram = GuestRam::new(RAM_SIZE).expect("guest RAM");
        let mut cfg = ExecutorConfig::new(ram.fd(), RAM_SIZE);
        cfg.executor_path = Some(executor_path());
        cfg.ram_map = map;
        cfg.max_fills_per_run = max_fills;
        if let Some(spin) = std::env::var("PLEX86_TEST_SPIN")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            cfg.spin = spin;
        }
        let exe = spawn(cfg);
        let mut state = GuestState::default();
        state.segs[1] = Segment::flat_code(CS_SEL);
        for i in [0, 2, 3] {
            state.segs[i] = Segment::flat_data(DS_SEL);
        }
        state.segs[4] = Segment::null(0);
        state.segs[5] = Segment::null(0);
        state.rflags = 0x202;
        state.gprs[4] = u64::from(STACK_TOP - 16);
        state.rip = u64::from(CODE);
        state.xcr0 = 3;
        let (cr0, cr4, efer) = mode.control_registers();
        state.cr0 = u64::from(cr0);
        state.cr3 = crate::pagetables::CR3;
        state.cr4 = u64::from(cr4);
        state.efer = efer;
        let tables = PageTables::new(&ram, mode);
        let mut vm = Vm {
            ram,
            exe,
            state,
            tables,
        };
        vm.tables.map_layout(&vm.ram);
        vm
    }

    pub fn alloc_table(&mut self) -> u64 {
        self.tables.alloc_table()
    }

    /// Physical address of the PDE for `lin`.
    pub fn pde_addr(&self, lin: u32) -> u64 {
        self.tables.pde_addr(&self.ram, lin)
    }

    pub fn write_entry(&self, pa: u64, v: u64) {
        self.tables.write_entry(&self.ram, pa, v)
    }

    /// Physical address of the PTE for `lin` (creating the page table if needed).
    pub fn pte_addr(&mut self, lin: u32) -> u64 {
        self.tables.pte_addr(&self.ram, lin)
    }

    /// Maps the 4 KiB page at `lin` to `phys` with PTE flags `flags`.
    pub fn map(&mut self, lin: u32, phys: u64, flags: u64) {
        self.tables.map(&self.ram, lin, phys, flags)
    }

    pub fn pte(&mut self, lin: u32) -> u64 {
        let pa = self.pte_addr(lin);
        self.tables.read_entry(&self.ram, pa)
    }

    pub fn set_pte(&mut self, lin: u32, v: u64) {
        let pa = self.pte_addr(lin);
        self.write_entry(pa, v);
    }

    /// Assembles 32-bit code at linear `at` (which must be mapped to CODE_PHYS + offset).
    pub fn code_at(
        &mut self,
        at: u32,
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) -> Vec<u8> {
        let mut a = CodeAssembler::new(32).unwrap();
        f(&mut a).unwrap();
        let bytes = a.assemble(u64::from(at)).unwrap();
        assert!(at >= CODE && at + bytes.len() as u32 <= CODE + 0x10000);
        self.ram.write(CODE_PHYS + u64::from(at - CODE), &bytes);
        bytes
    }

    /// Assembles code at CODE and points EIP there.
    pub fn code(
        &mut self,
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) -> Vec<u8> {
        self.state.rip = u64::from(CODE);
        self.code_at(CODE, f)
    }

    pub fn run(&mut self) -> &ExitRecord {
        self.run_with(&[])
    }

    pub fn run_with(&mut self, cmds: &[MmuCommand]) -> &ExitRecord {
        self.exe
            .run(&mut self.state, Duration::from_secs(5), cmds)
            .unwrap_or_else(|e| panic!("run failed: {e}"))
    }
}

/// Finds `needle` in assembled bytes (for "EIP at instruction X" assertions).
pub fn offset_of_bytes(hay: &[u8], needle: &[u8]) -> u32 {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("instruction bytes") as u32
}

/// The benchmarks' guest: `hlt` at CODE (exit + re-entry), and at [`TOUCHER`] a loop that
/// reads ECX pages from [`TOUCH`] on, then `hlt`s (demand fills).
pub mod toucher {
    use super::*;
    use iced_x86::code_asm::*;

    /// Pages a fill measurement touches.
    pub const FILL_PAGES: u32 = 64;
    /// 16 MiB linear: the first page the toucher reads.
    pub const TOUCH: u32 = 0x0100_0000;
    /// Where the toucher's code starts.
    pub const TOUCHER: u32 = CODE + 0x100;

    /// A VM whose code at CODE is `hlt`, and at CODE+0x100 touches `n` pages from TOUCH then `hlt`s.
    pub fn vm_with_toucher(n: u32) -> Vm {
        let mut vm = Vm::new(Mode::TwoLevel);
        for i in 0..n {
            vm.map(
                TOUCH + i * 4096,
                0x0040_0000 + u64::from(i) * 4096,
                URW | A | D,
            );
        }
        vm.code_at(CODE, |a| a.hlt());
        vm.code_at(CODE + 0x100, |a| {
            a.mov(ebx, TOUCH)?; // ECX (page count) comes from the caller
            let mut l = a.create_label();
            let mut done = a.create_label();
            a.test(ecx, ecx)?;
            a.jz(done)?;
            a.set_label(&mut l)?;
            a.mov(eax, dword_ptr(ebx))?;
            a.add(ebx, 4096)?;
            a.dec(ecx)?;
            a.jnz(l)?;
            a.set_label(&mut done)?;
            a.hlt()
        });
        vm
    }
}
