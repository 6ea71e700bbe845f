//! The 64-bit guest fixture: a guest RAM memfd with 4-level tables ([`LongTables`]), a 64-bit
//! user state as a Linux guest has it (CS 0x33 with L=1, SS 0x2b, null data selectors), the
//! stub executor (the only one that runs 64-bit code), and 64-bit code from iced's
//! CodeAssembler. Code, data and stack lie above 4 GiB, so that every address is wide.

use crate::executor_path;
use crate::pagetables::bits::*;
use crate::pagetables64::{LongTables, CR0, CR3, CR4, EFER};
use host_driver::stub::StubExecutor;
use host_driver::{ExecutorConfig, ExitRecord, GuestRam, GuestState, MmuCommand, Segment};
use iced_x86::code_asm::CodeAssembler;
use std::time::Duration;

/// Where the fixture puts code, data and stack (linear, all above 4 GiB), and the physical
/// pages behind them: 64 KiB each.
pub mod layout64 {
    /// Guest RAM size.
    pub const RAM_SIZE: u64 = 16 << 20;
    /// Code (linear).
    pub const CODE: u64 = 0x5555_5555_0000;
    /// Code (physical).
    pub const CODE_PHYS: u64 = 0x0010_0000;
    /// Data (linear).
    pub const DATA: u64 = 0x7f00_1234_0000;
    /// Data (physical).
    pub const DATA_PHYS: u64 = 0x0020_0000;
    /// Top of the stack (linear; it grows down).
    pub const STACK_TOP: u64 = 0x7ffd_0000_0000;
    /// Stack (physical).
    pub const STACK_PHYS: u64 = 0x0030_0000;
    /// Guest CS (GDT index 6, as Linux's `__USER_CS`) and SS (index 5, `__USER_DS`).
    pub const CS64: u16 = 0x33;
    /// Guest SS.
    pub const SS64: u16 = 0x2b;
}
use layout64::*;

/// Long enough that no test run ends by its budget.
pub const BUDGET: Duration = Duration::from_secs(5);

/// A 64-bit guest on a stub.
pub struct Vm64 {
    pub ram: GuestRam,
    pub stub: StubExecutor,
    pub state: GuestState,
    pub tables: LongTables,
}

impl Default for Vm64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Vm64 {
    /// The layout mapped (16 user-writable pages each; code executable, data and stack NX).
    pub fn new() -> Vm64 {
        let ram = GuestRam::new(RAM_SIZE).expect("guest RAM");
        let mut cfg = ExecutorConfig::new(ram.fd(), RAM_SIZE);
        cfg.executor_path = Some(executor_path());
        let stub = StubExecutor::spawn(cfg).expect("stub starts");
        let mut tables = LongTables::new(&ram);
        for i in 0..16u64 {
            let off = i * 4096;
            tables.map(&ram, CODE + off, CODE_PHYS + off, URW);
            tables.map(&ram, DATA + off, DATA_PHYS + off, URW | NX);
            tables.map(&ram, STACK_TOP - off - 4096, STACK_PHYS + off, URW | NX);
        }
        Vm64 {
            ram,
            stub,
            state: state64(),
            tables,
        }
    }

    /// Maps the 4 KiB page at `lin` to `phys` with entry flags `flags`.
    pub fn map(&mut self, lin: u64, phys: u64, flags: u64) {
        self.tables.map(&self.ram, lin, phys, flags)
    }

    /// The 4 KiB page entry of `lin`.
    pub fn pte(&mut self, lin: u64) -> u64 {
        let at = self.tables.pte_addr(&self.ram, lin);
        self.ram.read_u64(at)
    }

    /// Assembles 64-bit code at CODE and points RIP there; returns the bytes.
    pub fn code(
        &mut self,
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) -> Vec<u8> {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a).unwrap();
        let bytes = a.assemble(CODE).unwrap();
        assert!(bytes.len() <= 0x10000);
        self.ram.write(CODE_PHYS, &bytes);
        self.state.rip = CODE;
        bytes
    }

    /// One run from the state, after `cmds`.
    pub fn run_with(&mut self, cmds: &[MmuCommand]) -> ExitRecord {
        self.stub
            .run(&mut self.state, BUDGET, cmds)
            .unwrap_or_else(|e| panic!("run failed: {e}"))
            .clone()
    }

    /// One run from the state.
    pub fn run(&mut self) -> ExitRecord {
        self.run_with(&[])
    }
}

/// A 64-bit user state: CS 0x33 (L=1), SS 0x2b, null DS/ES/FS/GS, IF set, RSP near the
/// stack's top, 4-level paging with NX, x87 and SSE enabled.
pub fn state64() -> GuestState {
    let mut s = GuestState::default();
    s.segs[1] = Segment::flat_code64(CS64);
    s.segs[2] = Segment::flat_data(SS64);
    for i in [0, 3, 4, 5] {
        s.segs[i] = Segment::null(0);
    }
    s.rflags = 0x202;
    s.gprs[4] = STACK_TOP - 64;
    s.rip = CODE;
    s.xcr0 = 3;
    s.cr0 = CR0;
    s.cr3 = CR3;
    s.cr4 = CR4;
    s.efer = EFER;
    s
}

/// Asserts that CS came back for the emulator to reload (a far transfer to the host's user
/// code selector `selector`), with that host descriptor's kind: flat, access rights `attr`
/// (0xa0fb for 64-bit code, 0xc0fb for 32-bit code).
pub fn assert_host_cs_for_reload(state: &GuestState, selector: u16, attr: u16) {
    let cs = state.segs[1];
    assert_eq!(
        (cs.selector, cs.attr, cs.base, cs.limit, cs.flags),
        (selector, attr, 0, 0xf_ffff, host_driver::SEG_NOT_INSTALLED),
        "CS for reload as the host's {selector:#x}"
    );
}

/// Finds `needle` in assembled bytes (for "RIP at instruction X" assertions).
pub fn offset_in(hay: &[u8], needle: &[u8]) -> u64 {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:x?} not in the code")) as u64
}
