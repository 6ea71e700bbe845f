//! The shared control region: plain `#[repr(C)]` structures that cross the process boundary
//! between the library and the executor.
//!
//! The region is one memfd of [`REGION_SIZE`] bytes with two parts, grouped by writer:
//!
//! * [`LibArea`] at offset 0, written only by the library. The executor maps it read-only.
//! * [`ExecArea`] at [`EXEC_AREA_OFFSET`], written only by the executor. The library treats
//!   everything in it as untrusted: it copies the area out and validates every field.
//!
//! Each side publishes with a sequence number that doubles as a futex word
//! ([`LibArea::req_seq`], [`ExecArea::resp_seq`]); see `docs/ARCHITECTURE.md` ("Host driver").
//! Offsets are pinned by tests because `bochs-ffi` mirrors [`GuestState`] in a C header.

/// `"PLX86CTL"`: first field of [`LibArea`].
pub const MAGIC: u64 = u64::from_le_bytes(*b"PLX86CTL");
/// Protocol version; bumped on any layout change or new exit reason.
pub const VERSION: u32 = 5;
/// Maximum number of plain-RAM ranges in the RAM map.
pub const MAX_RAM_RANGES: usize = 64;
/// Maximum number of MMU commands carried by one request.
pub const MAX_COMMANDS: usize = 256;
/// Maximum number of entries in the "code pages written" list of one exit.
pub const MAX_CODE_PAGES: usize = 256;
/// Size of the XSAVE image carried in [`GuestState`].
pub const XSAVE_AREA_SIZE: usize = 4096;
/// Size of the executor's failure message buffer.
pub const MSG_LEN: usize = 256;
/// Polls (of the `spin` budget) that only PAUSE; later polls yield the CPU (`sched_yield`).
pub const SPIN_PAUSES: u32 = 64;
/// File descriptor number of the guest-RAM memfd in the executor.
pub const RAM_FD: i32 = 3;
/// File descriptor number of the control-region memfd in the executor.
pub const CONTROL_FD: i32 = 4;

/// Offset of [`ExecArea`] in the region (page aligned so that the two parts can be mapped with
/// different protections).
pub const EXEC_AREA_OFFSET: usize = round_up_page(core::mem::size_of::<LibArea>());
/// Total size of the control region.
pub const REGION_SIZE: usize = EXEC_AREA_OFFSET + round_up_page(core::mem::size_of::<ExecArea>());

const fn round_up_page(n: usize) -> usize {
    (n + 4095) & !4095
}

/// An XSAVE image in the standard (non-compacted) format, as produced by `XSAVE` with the
/// offsets of CPUID leaf 0xD. Only the first `xsave_size` bytes (reported by the executor at
/// start) are meaningful.
#[repr(C, align(64))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct XsaveImage(pub [u8; XSAVE_AREA_SIZE]);

impl XsaveImage {
    /// An all-zero image: every component in its initial state except FCW (0x037F) and MXCSR
    /// (0x1F80), which are set to their reset values with XSTATE_BV = x87|SSE.
    pub const fn initial() -> Self {
        let mut b = [0u8; XSAVE_AREA_SIZE];
        b[0] = 0x7f; // FCW = 0x037f
        b[1] = 0x03;
        b[24] = 0x80; // MXCSR = 0x1f80
        b[25] = 0x1f;
        b[512] = 0x3; // XSTATE_BV: x87 and SSE
        XsaveImage(b)
    }
    /// Reads a little-endian u64 at `off`.
    pub fn u64_at(&self, off: usize) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.0[off..off + 8]);
        u64::from_le_bytes(v)
    }
    /// Writes a little-endian u64 at `off`.
    pub fn set_u64_at(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// Reads a little-endian u32 at `off`.
    pub fn u32_at(&self, off: usize) -> u32 {
        let mut v = [0u8; 4];
        v.copy_from_slice(&self.0[off..off + 4]);
        u32::from_le_bytes(v)
    }
    /// The XSTATE_BV field of the XSAVE header (offset 512).
    pub fn xstate_bv(&self) -> u64 {
        self.u64_at(512)
    }
    /// The XCOMP_BV field of the XSAVE header (offset 520); 0 in the standard format.
    pub fn xcomp_bv(&self) -> u64 {
        self.u64_at(520)
    }
    /// MXCSR (offset 24).
    pub fn mxcsr(&self) -> u32 {
        self.u32_at(24)
    }
}

impl Default for XsaveImage {
    fn default() -> Self {
        Self::initial()
    }
}

impl core::fmt::Debug for XsaveImage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XsaveImage")
            .field("xstate_bv", &format_args!("{:#x}", self.xstate_bv()))
            .field("mxcsr", &format_args!("{:#x}", self.mxcsr()))
            .finish_non_exhaustive()
    }
}

/// Segment register indices in [`GuestState::segs`] (the hardware `sreg` encoding).
pub mod seg {
    /// ES
    pub const ES: usize = 0;
    /// CS
    pub const CS: usize = 1;
    /// SS
    pub const SS: usize = 2;
    /// DS
    pub const DS: usize = 3;
    /// FS
    pub const FS: usize = 4;
    /// GS
    pub const GS: usize = 5;
    /// Names in index order, for messages.
    pub const NAMES: [&str; 6] = ["ES", "CS", "SS", "DS", "FS", "GS"];
}

/// General-purpose register indices in [`GuestState::gprs`] (the hardware encoding).
pub mod gpr {
    /// EAX
    pub const EAX: usize = 0;
    /// ECX
    pub const ECX: usize = 1;
    /// EDX
    pub const EDX: usize = 2;
    /// EBX
    pub const EBX: usize = 3;
    /// ESP
    pub const ESP: usize = 4;
    /// EBP
    pub const EBP: usize = 5;
    /// ESI
    pub const ESI: usize = 6;
    /// EDI
    pub const EDI: usize = 7;
}

/// [`Segment::flags`] bit set on exit when the segment register holds a selector that the
/// monitor did not install (the guest loaded a host GDT selector natively, e.g. 0x2b). The
/// selector is then reported as loaded, the descriptor fields are the ones installed at entry,
/// and the emulator must reload the descriptor from the guest's own tables.
pub const SEG_NOT_INSTALLED: u32 = 1;

/// One segment register: visible selector plus descriptor cache.
///
/// `attr` uses the VMX "access rights" packing of descriptor bytes 5 and 6: bits 0-3 type,
/// bit 4 S, bits 5-6 DPL, bit 7 P, bit 12 AVL, bit 13 L, bit 14 D/B, bit 15 G. `limit` is the
/// raw 20-bit descriptor limit (scaled by 4 KiB when G is set).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Guest-visible selector (TI=0 GDT selectors only in this version).
    pub selector: u16,
    /// Access rights, see the type documentation.
    pub attr: u16,
    /// Raw 20-bit limit.
    pub limit: u32,
    /// Base address.
    pub base: u32,
    /// Exit-only flags ([`SEG_NOT_INSTALLED`]); must be 0 on entry.
    pub flags: u32,
}

impl Segment {
    /// A flat 4 GiB 32-bit segment with the given selector and type (DPL 3, present, S=1).
    pub const fn flat(selector: u16, seg_type: u8) -> Self {
        Segment {
            selector,
            attr: (seg_type as u16 & 0xf) | 0x10 | (3 << 5) | 0x80 | (1 << 14) | (1 << 15),
            limit: 0xfffff,
            base: 0,
            flags: 0,
        }
    }
    /// A flat execute/read code segment (type 0xB).
    pub const fn flat_code(selector: u16) -> Self {
        Self::flat(selector, 0xb)
    }
    /// A flat read/write data segment (type 0x3).
    pub const fn flat_data(selector: u16) -> Self {
        Self::flat(selector, 0x3)
    }
    /// A null segment register value (selector 0..3, unusable).
    pub const fn null(selector: u16) -> Self {
        Segment {
            selector,
            attr: 0,
            limit: 0,
            base: 0,
            flags: 0,
        }
    }
    /// True when the selector is a null selector (index 0, TI 0).
    pub const fn is_null(&self) -> bool {
        self.selector & !3 == 0
    }
    /// Descriptor type (bits 0-3 of `attr`).
    pub const fn seg_type(&self) -> u8 {
        (self.attr & 0xf) as u8
    }
    /// S bit (code/data rather than system).
    pub const fn s(&self) -> bool {
        self.attr & 0x10 != 0
    }
    /// Descriptor privilege level.
    pub const fn dpl(&self) -> u8 {
        ((self.attr >> 5) & 3) as u8
    }
    /// Present bit.
    pub const fn present(&self) -> bool {
        self.attr & 0x80 != 0
    }
    /// AVL bit.
    pub const fn avl(&self) -> bool {
        self.attr & (1 << 12) != 0
    }
    /// L bit (64-bit code).
    pub const fn long(&self) -> bool {
        self.attr & (1 << 13) != 0
    }
    /// D/B bit.
    pub const fn db(&self) -> bool {
        self.attr & (1 << 14) != 0
    }
    /// Granularity bit.
    pub const fn g(&self) -> bool {
        self.attr & (1 << 15) != 0
    }
    /// True for a code segment.
    pub const fn is_code(&self) -> bool {
        self.seg_type() & 0x8 != 0
    }
}

/// The guest's user-visible CPU state, in plain C layout (mirrored by `bochs-ffi`).
///
/// Selectors in `segs` are the guest's own values; the translation to the host LDT happens
/// inside the driver. `eflags` must describe CPL 3 code with IF=1, IOPL=0 and TF/NT/RF/VM/VIF/
/// VIP clear, or the entry is refused as unsupported.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestState {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI (see [`gpr`]).
    pub gprs: [u32; 8],
    /// Instruction pointer (offset in CS).
    pub eip: u32,
    /// EFLAGS.
    pub eflags: u32,
    /// ES, CS, SS, DS, FS, GS (see [`seg`]).
    pub segs: [Segment; 6],
    /// CR0 (PE, PG, WP, AM are read).
    pub cr0: u32,
    /// CR2 (carried through unchanged; page-fault exits report the address separately).
    pub cr2: u32,
    /// CR3: page-directory (or PDPT in PAE mode) base.
    pub cr3: u32,
    /// CR4 (PSE, PAE, PGE are read).
    pub cr4: u32,
    /// EFER (NXE is read).
    pub efer: u64,
    /// The guest's XCR0: components of `xsave` that the guest has enabled (bit 0 always).
    pub xcr0: u64,
    /// Padding; must be zero.
    pub reserved: [u64; 3],
    /// x87/SSE/AVX/AVX-512 state, standard XSAVE format.
    pub xsave: XsaveImage,
}

impl Default for GuestState {
    fn default() -> Self {
        GuestState {
            gprs: [0; 8],
            eip: 0,
            eflags: 0x202,
            segs: [Segment::default(); 6],
            cr0: 0x8000_0011,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            xcr0: 0x3,
            reserved: [0; 3],
            xsave: XsaveImage::initial(),
        }
    }
}

/// A plain-RAM range `[start, end)` of guest-physical memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// [`RawCommand::kind`] values.
pub mod cmd {
    /// Drop every mirrored page.
    pub const FLUSH_ALL: u32 = 1;
    /// Drop every mirrored page that is not global.
    pub const FLUSH_NON_GLOBAL: u32 = 2;
    /// Drop the mirrored page of one linear address.
    pub const INVALIDATE_PAGE: u32 = 3;
    /// Write-protect every mirror of one guest-physical page.
    pub const WRITE_PROTECT_PHYS: u32 = 4;
}

/// One MMU command in the request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCommand {
    /// One of [`cmd`].
    pub kind: u32,
    /// Padding.
    pub pad: u32,
    /// Linear or physical address argument.
    pub addr: u64,
}

/// [`LibArea::req_kind`] values.
pub mod req {
    /// Apply the commands, then enter the guest.
    pub const RUN: u32 = 1;
    /// Apply the commands only.
    pub const COMMANDS: u32 = 2;
    /// Exit the executor.
    pub const SHUTDOWN: u32 = 3;
}

/// The library-written part of the region. Read-only in the executor.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)]
pub struct LibArea {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION`].
    pub version: u32,
    /// Process id of the library (the executor's parent), checked after PR_SET_PDEATHSIG.
    pub library_pid: u32,
    /// Size of the guest-RAM memfd.
    pub ram_size: u64,
    /// Number of valid entries in `ram_ranges`.
    pub n_ram_ranges: u32,
    /// Clock for the budget timer: 0 = CLOCK_MONOTONIC, 1 = the executor thread's CPU time.
    pub budget_clock: u32,
    /// Plain-RAM ranges: only pages inside them are mirrored.
    pub ram_ranges: [RamRange; MAX_RAM_RANGES],
    /// Request sequence number and futex word: bumped after a request is written.
    pub req_seq: u32,
    /// One of [`req`].
    pub req_kind: u32,
    /// Budget of host nanoseconds for a run.
    pub budget_ns: u64,
    /// Number of valid entries in `commands`.
    pub n_commands: u32,
    /// Spin iterations before sleeping on the futex (0 = sleep at once).
    pub spin: u32,
    /// Demand fills after which a run ends with [`RawReason::FillLimit`] (0 = no limit).
    pub max_fills: u32,
    /// Padding; zero.
    pub pad0: u32,
    /// MMU commands applied before the entry.
    pub commands: [RawCommand; MAX_COMMANDS],
    /// The native selectors to install ([`native_selector`]), and per-segment
    /// state are derived by the executor from this state.
    pub state: GuestState,
}

/// Index of the executor's LDT where guest GDT index 0 would be mirrored: guest GDT index *i*
/// is installed at LDT index `LDT_MIRROR_BASE + i`. Placed high in a one-page LDT (512
/// entries, so the kernel's `write_ldt` copies a page, not a vmalloc'ed 64 KiB): guest LDT
/// selectors, which a native load resolves in the same LDT, find empty slots and fault unless
/// they name one of these 64 indices (docs/ARCHITECTURE.md, "Segments").
pub const LDT_MIRROR_BASE: u16 = 448;
/// Guest GDT indices that can be mirrored (`0..LDT_MIRROR_ENTRIES`); states using higher ones
/// are emulated.
pub const LDT_MIRROR_ENTRIES: u16 = 64;

/// The native selector installed for a guest GDT selector: the mirror's LDT index, TI = 1, the
/// guest's RPL; null selectors stay null. `guest`'s index must be below
/// [`LDT_MIRROR_ENTRIES`] (checked at entry).
pub fn native_selector(guest: u16) -> u16 {
    if guest & !3 == 0 {
        guest
    } else {
        ((LDT_MIRROR_BASE + (guest >> 3)) << 3) | 4 | (guest & 3)
    }
}

/// The guest GDT selector a native LDT selector mirrors, if it is a mirror selector.
pub fn guest_selector(native: u16) -> Option<u16> {
    let index = native >> 3;
    (native & 4 != 0 && (LDT_MIRROR_BASE..LDT_MIRROR_BASE + LDT_MIRROR_ENTRIES).contains(&index))
        .then(|| ((index - LDT_MIRROR_BASE) << 3) | (native & 3))
}

/// [`ExecArea::status`] values.
pub mod status {
    /// The executor is starting.
    pub const STARTING: u32 = 0;
    /// Setup finished; waiting for requests.
    pub const READY: u32 = 1;
    /// A run ended; `exit` and `state` are valid.
    pub const EXITED: u32 = 2;
    /// A command-only request was applied.
    pub const COMMANDS_DONE: u32 = 3;
    /// Setup failed; `fail_code` and `msg` say why and the executor exits.
    pub const FAILED: u32 = 4;
}

/// [`RawExit::reason`] values (a `repr(u32)` mirror of [`crate::ExitReason`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawReason {
    /// Guest-visible page fault: `linear`, `access`, `error_code`.
    PageFault = 1,
    /// An access the executor cannot mirror (device memory, ROM, page 0): `linear`, `access`.
    NeedsEmulation = 2,
    /// #GP not otherwise classified: `error_code`.
    GeneralProtection = 3,
    /// #UD.
    InvalidOpcode = 4,
    /// #DE.
    DivideError = 5,
    /// #MF.
    X87Exception = 6,
    /// #XM.
    SimdException = 7,
    /// INT3.
    Breakpoint = 8,
    /// INT n: `vector`.
    SoftwareInterrupt = 9,
    /// INTO.
    Overflow = 10,
    /// SYSCALL (`vector` = 0) or SYSENTER (`vector` = 1).
    SystemCall = 11,
    /// RDTSC (`vector` = 0) or RDTSCP (`vector` = 1).
    Rdtsc = 12,
    /// HLT/CLI/STI/IN/OUT or another privileged instruction.
    Privileged = 13,
    /// Segment register load or far control transfer.
    SegmentLoad = 14,
    /// Any other exception: `vector`, `error_code` (flag bit 0: error code valid).
    OtherException = 15,
    /// The budget is spent.
    BudgetExpired = 16,
    /// The code-page log is full (the faulting write has not happened yet).
    CodeLogFull = 17,
    /// Guest code escaped compatibility mode: `vector` = escape kind, `detail` = address.
    GuestEscape = 18,
    /// The run made [`LibArea::max_fills`] demand fills (the last faulting access is mirrored
    /// now and has not happened yet).
    FillLimit = 19,
    /// A single-step trap: the instruction before `eip` ran with EFLAGS.TF set (native code
    /// set it with POPF). The state is *after* that instruction, TF set; its #DB is pending.
    SingleStep = 20,
    /// CPUID, trapped with CPUID faulting (`ExecArea::cpuid_faulting`).
    Cpuid = 21,
}

impl RawReason {
    /// Decodes a raw value; `None` for unknown values.
    pub fn from_u32(v: u32) -> Option<Self> {
        use RawReason::*;
        Some(match v {
            1 => PageFault,
            2 => NeedsEmulation,
            3 => GeneralProtection,
            4 => InvalidOpcode,
            5 => DivideError,
            6 => X87Exception,
            7 => SimdException,
            8 => Breakpoint,
            9 => SoftwareInterrupt,
            10 => Overflow,
            11 => SystemCall,
            12 => Rdtsc,
            13 => Privileged,
            14 => SegmentLoad,
            15 => OtherException,
            16 => BudgetExpired,
            17 => CodeLogFull,
            18 => GuestEscape,
            19 => FillLimit,
            20 => SingleStep,
            21 => Cpuid,
            _ => return None,
        })
    }
}

/// [`RawExit::flags`] bit: `error_code` is valid (OtherException).
pub const EXIT_HAS_ERROR_CODE: u32 = 1;
/// [`RawExit::flags`] bit: ECX was clobbered by the instruction and is not the pre-instruction
/// value (SYSCALL).
pub const EXIT_ECX_CLOBBERED: u32 = 2;

/// [`RawExit::flags`] bit: EIP and ECX are not the pre-instruction values: the host kernel's
/// compat fast-syscall path (SYSCALL on AMD, SYSENTER on Intel) replaced them before the
/// executor could see them. EIP is reported as 0. If the guest stack at ESP was not mapped,
/// the kernel did not even make (or trap) the call and EAX holds -EFAULT.
pub const EXIT_EIP_LOST: u32 = 4;

/// Escape kinds in [`RawExit::vector`] for [`RawReason::GuestEscape`].
pub mod escape {
    /// Guest code was found running in 64-bit mode (CS 0x33 or RIP above 4 GiB).
    pub const LONG_MODE: u32 = 1;
    /// A 64-bit system call was made from an address below 4 GiB.
    pub const HOST_SYSCALL: u32 = 2;
}

/// Access kinds in [`RawExit::access`].
pub mod access {
    /// Data read.
    pub const READ: u32 = 0;
    /// Data write.
    pub const WRITE: u32 = 1;
    /// Instruction fetch.
    pub const FETCH: u32 = 2;

    use guest_paging::Access;

    /// The wire value of an access kind.
    pub fn encode(a: Access) -> u32 {
        match a {
            Access::Read => READ,
            Access::Write => WRITE,
            Access::Fetch => FETCH,
        }
    }
    /// The access kind of a wire value; `None` for anything else.
    pub fn decode(v: u32) -> Option<Access> {
        match v {
            READ => Some(Access::Read),
            WRITE => Some(Access::Write),
            FETCH => Some(Access::Fetch),
            _ => None,
        }
    }
}

/// The exit record written by the executor.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawExit {
    /// A [`RawReason`] value.
    pub reason: u32,
    /// Vector / sub-kind (see [`RawReason`]).
    pub vector: u32,
    /// Error code where the reason has one.
    pub error_code: u32,
    /// Linear address for memory exits.
    pub linear: u32,
    /// Access kind for memory exits ([`access`]).
    pub access: u32,
    /// `EXIT_*` flags.
    pub flags: u32,
    /// Extra detail (escape address).
    pub detail: u64,
    /// Native time used by the run, in nanoseconds.
    pub native_ns: u64,
    /// The part of `native_ns` spent on demand fills (at most `native_ns`): the executor's
    /// measured handler time plus, per fill, its signal delivery and return as calibrated at
    /// start-up.
    pub fill_ns: u64,
    /// Number of valid entries in `code_pages`.
    pub n_code_pages: u32,
    /// Pages mirrored on demand during the run (host #PF → walk → mmap); informational.
    pub demand_fills: u32,
    /// Guest-physical addresses of write-protected pages written natively during the run.
    pub code_pages: [u64; MAX_CODE_PAGES],
}

impl RawExit {
    /// An all-zero record.
    pub const ZERO: RawExit = RawExit {
        reason: 0,
        vector: 0,
        error_code: 0,
        linear: 0,
        access: 0,
        flags: 0,
        detail: 0,
        native_ns: 0,
        fill_ns: 0,
        n_code_pages: 0,
        demand_fills: 0,
        code_pages: [0; MAX_CODE_PAGES],
    };
}

/// The executor-written part of the region. Untrusted by the library.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)]
pub struct ExecArea {
    /// Response sequence number and futex word: set to the request's `req_seq` when done
    /// (to 1 when setup finished or failed).
    pub resp_seq: u32,
    /// One of [`status`].
    pub status: u32,
    /// Bytes of the XSAVE image that the executor transfers (from the host signal frame).
    pub xsave_size: u32,
    /// Failure code when `status` is FAILED (also the process exit code).
    pub fail_code: u32,
    /// XSAVE components the host saves in signal frames (the most a guest XCR0 may enable).
    pub xsave_features: u64,
    /// Set to 1 by the executor while it sleeps on `LibArea::req_seq` (the library skips the
    /// futex wake otherwise).
    pub exec_sleeping: u32,
    /// Length of `msg`.
    pub msg_len: u32,
    /// 1 when native CPUID faults (`arch_prctl(ARCH_SET_CPUID, 0)` took effect) and exits as
    /// [`RawReason::Cpuid`]; 0 when the host has no CPUID faulting and native code reads the
    /// host's CPUID. Set at setup.
    pub cpuid_faulting: u32,
    /// UTF-8 failure message.
    pub msg: [u8; MSG_LEN],
    /// The exit record of the last run.
    pub exit: RawExit,
    /// The guest state at the exit (before the instruction that needs emulation).
    pub state: GuestState,
}

/// Executor exit codes (process exit status), one per fatal cause.
pub mod exit_code {
    /// The control region or the file descriptors were not as expected.
    pub const BAD_SETUP_ARGS: i32 = 10;
    /// The parent changed before PR_SET_PDEATHSIG took effect.
    pub const PARENT_GONE: i32 = 11;
    /// Something of the executor lies below 4 GiB.
    pub const LOW_MAPPING: i32 = 12;
    /// A setup system call failed.
    pub const SETUP_SYSCALL: i32 = 13;
    /// The executor panicked.
    pub const PANIC: i32 = 14;
    /// The library sent an invalid request.
    pub const BAD_REQUEST: i32 = 15;
    /// The host CPU or kernel lacks a required feature.
    pub const UNSUPPORTED_HOST: i32 = 16;
    /// Seccomp self-test mode: the forbidden call returned (the filter failed).
    pub const SELFTEST_SURVIVED: i32 = 17;
    /// Exiting after a guest escape (the executor is not trusted any more).
    pub const GUEST_ESCAPED: i32 = 18;

    /// Describes an exit code.
    pub fn describe(code: i32) -> &'static str {
        match code {
            0 => "normal shutdown",
            BAD_SETUP_ARGS => "bad control region or file descriptors",
            PARENT_GONE => "parent process went away",
            LOW_MAPPING => "executor memory found below 4 GiB",
            SETUP_SYSCALL => "a setup system call failed",
            PANIC => "executor panicked",
            BAD_REQUEST => "invalid request from the library",
            UNSUPPORTED_HOST => "host lacks a required CPU or kernel feature",
            SELFTEST_SURVIVED => "seccomp self-test: forbidden call was not stopped",
            GUEST_ESCAPED => "guest escape",
            _ => "unknown exit code",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn guest_state_layout_is_pinned() {
        assert_eq!(size_of::<Segment>(), 16);
        assert_eq!(offset_of!(Segment, selector), 0);
        assert_eq!(offset_of!(Segment, attr), 2);
        assert_eq!(offset_of!(Segment, limit), 4);
        assert_eq!(offset_of!(Segment, base), 8);
        assert_eq!(offset_of!(Segment, flags), 12);
        assert_eq!(offset_of!(GuestState, gprs), 0);
        assert_eq!(offset_of!(GuestState, eip), 32);
        assert_eq!(offset_of!(GuestState, eflags), 36);
        assert_eq!(offset_of!(GuestState, segs), 40);
        assert_eq!(offset_of!(GuestState, cr0), 136);
        assert_eq!(offset_of!(GuestState, cr2), 140);
        assert_eq!(offset_of!(GuestState, cr3), 144);
        assert_eq!(offset_of!(GuestState, cr4), 148);
        assert_eq!(offset_of!(GuestState, efer), 152);
        assert_eq!(offset_of!(GuestState, xcr0), 160);
        assert_eq!(offset_of!(GuestState, xsave), 192);
        assert_eq!(size_of::<GuestState>(), 192 + XSAVE_AREA_SIZE);
        assert_eq!(align_of::<GuestState>(), 64);
    }

    #[test]
    fn control_region_layout_is_pinned() {
        assert_eq!(offset_of!(LibArea, magic), 0);
        assert_eq!(offset_of!(LibArea, version), 8);
        assert_eq!(offset_of!(LibArea, library_pid), 12);
        assert_eq!(offset_of!(LibArea, ram_size), 16);
        assert_eq!(offset_of!(LibArea, n_ram_ranges), 24);
        assert_eq!(offset_of!(LibArea, budget_clock), 28);
        assert_eq!(offset_of!(LibArea, ram_ranges), 32);
        assert_eq!(offset_of!(LibArea, req_seq), 1056);
        assert_eq!(offset_of!(LibArea, req_kind), 1060);
        assert_eq!(offset_of!(LibArea, budget_ns), 1064);
        assert_eq!(offset_of!(LibArea, n_commands), 1072);
        assert_eq!(offset_of!(LibArea, spin), 1076);
        assert_eq!(offset_of!(LibArea, max_fills), 1080);
        assert_eq!(offset_of!(LibArea, commands), 1088);
        assert_eq!(offset_of!(LibArea, state), 5184);
        assert_eq!(size_of::<LibArea>(), 5184 + size_of::<GuestState>());
        assert_eq!(EXEC_AREA_OFFSET, 12288);
        assert_eq!(offset_of!(ExecArea, resp_seq), 0);
        assert_eq!(offset_of!(ExecArea, status), 4);
        assert_eq!(offset_of!(ExecArea, xsave_size), 8);
        assert_eq!(offset_of!(ExecArea, fail_code), 12);
        assert_eq!(offset_of!(ExecArea, xsave_features), 16);
        assert_eq!(offset_of!(ExecArea, exec_sleeping), 24);
        assert_eq!(offset_of!(ExecArea, msg_len), 28);
        assert_eq!(offset_of!(ExecArea, cpuid_faulting), 32);
        assert_eq!(offset_of!(ExecArea, msg), 36);
        assert_eq!(offset_of!(ExecArea, exit), 296);
        assert_eq!(offset_of!(RawExit, native_ns), 32);
        assert_eq!(offset_of!(RawExit, fill_ns), 40);
        assert_eq!(offset_of!(RawExit, demand_fills), 52);
        assert_eq!(offset_of!(RawExit, code_pages), 56);
        assert_eq!(offset_of!(ExecArea, state), 2432);
        assert_eq!(REGION_SIZE, 12288 + 8192);
    }

    #[test]
    fn raw_reason_round_trips() {
        // Every value from 1 to the highest reason decodes, to itself; nothing else does.
        let highest = RawReason::Cpuid as u32;
        for v in 0..64 {
            match RawReason::from_u32(v) {
                Some(r) => assert_eq!(r as u32, v),
                None => assert!(v == 0 || v > highest, "{v} does not decode"),
            }
        }
        assert_eq!(RawReason::from_u32(highest), Some(RawReason::Cpuid));
    }
}
