//! Typed views of the mapped control region, one per writer: [`LibSide`] for the library (it
//! writes [`LibArea`] and reads [`ExecArea`]), [`ExecSide`] for the executor (the reverse).
//! Field offsets are used here and nowhere else. Each process maps the region itself and makes
//! its view with `unsafe` `new` (the mapping must outlive the view); everything after that is
//! safe. All access is by copy or through atomics: no reference into memory the other process
//! writes is ever made, and nothing read is trusted to be a valid enum or in range until the
//! reader decodes it.

use crate::{
    ExecArea, GuestState, LibArea, RamRange, RawCommand, RawExit, Request, Status,
    EXEC_AREA_OFFSET, MAX_COMMANDS, MSG_LEN, REGION_SIZE,
};
use core::marker::PhantomData;
use core::mem::{offset_of, size_of};
use core::ptr::NonNull;
use std::sync::atomic::AtomicU32;

/// Plain data: every bit pattern is a valid value.
///
/// # Safety
/// Implementors must be `repr(C)` structs of integers and arrays of integers (with explicit
/// padding fields), for which any byte pattern is a valid value.
pub unsafe trait Pod: Copy + 'static {
    /// The all-zero value.
    fn zeroed() -> Self {
        // SAFETY: any bit pattern, including all zeros, is valid for a Pod type.
        unsafe { core::mem::zeroed() }
    }
}

// SAFETY: repr(C) integer fields and integer arrays only.
unsafe impl Pod for ExecArea {}
// SAFETY: repr(C) integer fields and integer arrays only.
unsafe impl Pod for LibArea {}
// SAFETY: repr(C) integer fields and integer arrays only.
unsafe impl Pod for GuestState {}
// SAFETY: repr(C) integer fields and integer arrays only.
unsafe impl Pod for RawExit {}
// SAFETY: repr(C) integer fields.
unsafe impl Pod for RawCommand {}
// SAFETY: repr(C) integer fields.
unsafe impl Pod for RamRange {}
// SAFETY: integers.
unsafe impl Pod for u32 {}
// SAFETY: integers.
unsafe impl Pod for u64 {}

/// The bytes of a Pod value.
pub fn pod_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `v` is a valid reference to `size_of::<T>()` initialised bytes (Pod types have
    // explicit padding fields, no implicit padding).
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The bytes of a Pod value, writable.
pub fn pod_bytes_mut<T: Pod>(v: &mut T) -> &mut [u8] {
    // SAFETY: as `pod_bytes`; any byte pattern written is a valid `T`.
    unsafe { core::slice::from_raw_parts_mut((v as *mut T).cast::<u8>(), size_of::<T>()) }
}

/// One area of the mapped region: `len` bytes at `ptr`, writable or not.
#[derive(Clone, Copy, Debug)]
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    fn word(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.len);
        // SAFETY: inside the area (checked) and 4-byte aligned (areas are page aligned); the
        // mapping outlives the view (`new`'s contract). The other process uses it atomically too.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast::<u32>()) }
    }

    fn read_bytes(&self, off: usize, dst: &mut [u8]) {
        assert!(off.checked_add(dst.len()).is_some_and(|e| e <= self.len));
        // SAFETY: the source is inside the area (checked) and cannot overlap `dst`, ordinary
        // memory of this process. A byte copy tolerates concurrent writes by the other side.
        unsafe {
            core::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        }
    }

    fn read<T: Pod>(&self, off: usize) -> T {
        let mut v = T::zeroed();
        self.read_bytes(off, pod_bytes_mut(&mut v));
        v
    }

    /// Only on an area mapped writable (the views' constructors say which).
    fn write_bytes(&self, off: usize, src: &[u8]) {
        assert!(off.checked_add(src.len()).is_some_and(|e| e <= self.len));
        // SAFETY: the destination is inside the area (checked), mapped writable (callers) and
        // cannot overlap `src`.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len())
        }
    }

    fn write<T: Pod>(&self, off: usize, v: &T) {
        self.write_bytes(off, pod_bytes(v));
    }
}

const EXEC_LEN: usize = REGION_SIZE - EXEC_AREA_OFFSET;

/// The library's view: it writes the request ([`LibArea`]) and copies the executor's response
/// ([`ExecArea`]) out to validate it.
#[derive(Clone, Copy, Debug)]
pub struct LibSide<'a> {
    lib: Area,
    exec: Area,
    _mapping: PhantomData<&'a ()>,
}

impl<'a> LibSide<'a> {
    /// The view of a region mapped read/write at `region`.
    ///
    /// # Safety
    /// `region` must point to a shared mapping of the whole region ([`REGION_SIZE`] bytes,
    /// page aligned, readable and writable) that stays mapped for `'a`.
    pub unsafe fn new(region: NonNull<u8>) -> Self {
        // SAFETY: EXEC_AREA_OFFSET < REGION_SIZE: inside the mapping (the caller's contract).
        let exec = unsafe { region.add(EXEC_AREA_OFFSET) };
        LibSide {
            lib: Area {
                ptr: region,
                len: EXEC_AREA_OFFSET,
            },
            exec: Area {
                ptr: exec,
                len: EXEC_LEN,
            },
            _mapping: PhantomData,
        }
    }

    /// Writes the whole library area (at spawn, before the executor starts).
    pub fn init(&self, header: &LibArea) {
        self.lib.write(0, header);
    }
    /// The guest state of the next run.
    pub fn set_state(&self, state: &GuestState) {
        self.lib.write(offset_of!(LibArea, state), state);
    }
    /// The MMU commands of the next request (at most [`MAX_COMMANDS`]).
    pub fn set_commands(&self, cmds: impl ExactSizeIterator<Item = RawCommand>) {
        assert!(cmds.len() <= MAX_COMMANDS);
        let n = cmds.len();
        for (i, c) in cmds.enumerate() {
            self.lib.write(
                offset_of!(LibArea, commands) + i * size_of::<RawCommand>(),
                &c,
            );
        }
        self.lib.write(offset_of!(LibArea, n_commands), &(n as u32));
    }
    /// The kind and budget of the next request (published by bumping [`LibSide::req_seq`]).
    pub fn set_request(&self, kind: Request, budget_ns: u64) {
        self.lib
            .write(offset_of!(LibArea, req_kind), &(kind as u32));
        self.lib.write(offset_of!(LibArea, budget_ns), &budget_ns);
    }
    /// The request sequence number and futex word.
    pub fn req_seq(&self) -> &'a AtomicU32 {
        self.word_lib(offset_of!(LibArea, req_seq))
    }
    /// The response sequence number and futex word.
    pub fn resp_seq(&self) -> &'a AtomicU32 {
        self.word_exec(offset_of!(ExecArea, resp_seq))
    }
    /// The executor's "asleep waiting for a request" word.
    pub fn exec_sleeping(&self) -> &'a AtomicU32 {
        self.word_exec(offset_of!(ExecArea, exec_sleeping))
    }
    /// The status word as it is now (untrusted).
    pub fn status(&self) -> u32 {
        self.exec.read(offset_of!(ExecArea, status))
    }
    /// A copy of the executor's area, to validate.
    pub fn snapshot(&self) -> ExecArea {
        self.exec.read(0)
    }

    fn word_lib(&self, off: usize) -> &'a AtomicU32 {
        let w: *const AtomicU32 = self.lib.word(off);
        // SAFETY: the word lives in the mapping, which outlives 'a (`new`'s contract).
        unsafe { &*w }
    }
    fn word_exec(&self, off: usize) -> &'a AtomicU32 {
        let w: *const AtomicU32 = self.exec.word(off);
        // SAFETY: as in `word_lib`.
        unsafe { &*w }
    }
}

/// The executor's view: it reads requests ([`LibArea`], mapped read-only) and writes its
/// responses ([`ExecArea`]).
#[derive(Clone, Copy, Debug)]
pub struct ExecSide<'a> {
    lib: Area,
    exec: Area,
    _mapping: PhantomData<&'a ()>,
}

impl<'a> ExecSide<'a> {
    /// The view of the library area mapped (at least) readable at `lib` and the executor area
    /// mapped read/write at `exec`.
    ///
    /// # Safety
    /// `lib` must point to a shared mapping of the region's first [`EXEC_AREA_OFFSET`] bytes
    /// and `exec` to a writable shared mapping of the rest, both page aligned and mapped for `'a`.
    pub unsafe fn new(lib: NonNull<u8>, exec: NonNull<u8>) -> Self {
        ExecSide {
            lib: Area {
                ptr: lib,
                len: EXEC_AREA_OFFSET,
            },
            exec: Area {
                ptr: exec,
                len: EXEC_LEN,
            },
            _mapping: PhantomData,
        }
    }

    /// A copy of the whole library area (at setup).
    pub fn header(&self) -> LibArea {
        self.lib.read(0)
    }
    /// The pending request's kind, as written (the library is trusted, but the word is still
    /// decoded, not transmuted).
    pub fn request_kind(&self) -> u32 {
        self.lib.read(offset_of!(LibArea, req_kind))
    }
    /// The pending request's budget.
    pub fn budget_ns(&self) -> u64 {
        self.lib.read(offset_of!(LibArea, budget_ns))
    }
    /// The pending request's MMU commands, in order (at most [`MAX_COMMANDS`]).
    pub fn commands(&self) -> impl Iterator<Item = RawCommand> + 'a {
        let n = self.lib.read::<u32>(offset_of!(LibArea, n_commands)) as usize;
        let lib = self.lib;
        (0..n.min(MAX_COMMANDS))
            .map(move |i| lib.read(offset_of!(LibArea, commands) + i * size_of::<RawCommand>()))
    }
    /// The pending request's number of commands, as written.
    pub fn n_commands(&self) -> u32 {
        self.lib.read(offset_of!(LibArea, n_commands))
    }
    /// The pending run's entry state.
    pub fn state(&self) -> GuestState {
        self.lib.read(offset_of!(LibArea, state))
    }
    /// The request sequence number and futex word.
    pub fn req_seq(&self) -> &'a AtomicU32 {
        let w: *const AtomicU32 = self.lib.word(offset_of!(LibArea, req_seq));
        // SAFETY: the word lives in the mapping, which outlives 'a (`new`'s contract); only
        // loads and futex waits are made on it (it may be mapped read-only).
        unsafe { &*w }
    }
    /// The response sequence number and futex word.
    pub fn resp_seq(&self) -> &'a AtomicU32 {
        let w: *const AtomicU32 = self.exec.word(offset_of!(ExecArea, resp_seq));
        // SAFETY: as in `req_seq`, in the writable area.
        unsafe { &*w }
    }
    /// The "asleep waiting for a request" word.
    pub fn exec_sleeping(&self) -> &'a AtomicU32 {
        let w: *const AtomicU32 = self.exec.word(offset_of!(ExecArea, exec_sleeping));
        // SAFETY: as in `resp_seq`.
        unsafe { &*w }
    }

    /// Setup succeeded: what the executor transfers and whether CPUID faults, then READY.
    /// The caller publishes by storing 1 in [`ExecSide::resp_seq`].
    pub fn ready(&self, xsave_size: u32, xsave_features: u64, cpuid_faulting: bool) {
        self.exec
            .write(offset_of!(ExecArea, xsave_size), &xsave_size);
        self.exec
            .write(offset_of!(ExecArea, xsave_features), &xsave_features);
        self.exec.write(
            offset_of!(ExecArea, cpuid_faulting),
            &u32::from(cpuid_faulting),
        );
        self.set_status(Status::Ready);
    }
    /// Setup failed with `code`: the message (truncated to [`MSG_LEN`]), the code, FAILED.
    pub fn fail(&self, code: i32, msg: &str) {
        let mut buf = [0u8; MSG_LEN];
        let n = msg.len().min(MSG_LEN);
        buf[..n].copy_from_slice(&msg.as_bytes()[..n]);
        self.exec.write_bytes(offset_of!(ExecArea, msg), &buf);
        self.exec.write(offset_of!(ExecArea, msg_len), &(n as u32));
        self.exec
            .write(offset_of!(ExecArea, fail_code), &(code as u32));
        self.set_status(Status::Failed);
    }
    /// A run's exit record (only its logged code pages are copied) and exit state.
    pub fn set_exit(&self, exit: &RawExit, state: &GuestState) {
        let n = (exit.n_code_pages as usize).min(exit.code_pages.len());
        let used = offset_of!(RawExit, code_pages) + n * size_of::<u64>();
        self.exec
            .write_bytes(offset_of!(ExecArea, exit), &pod_bytes(exit)[..used]);
        self.exec.write(offset_of!(ExecArea, state), state);
    }
    /// The response's status (published by storing the request's sequence number in
    /// [`ExecSide::resp_seq`]).
    pub fn set_status(&self, status: Status) {
        self.exec
            .write(offset_of!(ExecArea, status), &(status as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CommandKind, ExitReason, ExitRecord};
    use std::sync::atomic::Ordering;

    /// A page-aligned heap block standing in for the shared mapping.
    fn region() -> (Vec<u64>, NonNull<u8>) {
        let mut v = vec![0u64; REGION_SIZE.div_ceil(8) + 512];
        let base = v.as_mut_ptr() as usize;
        let aligned = (base + 4095) & !4095;
        let p = NonNull::new(aligned as *mut u8).unwrap();
        (v, p)
    }

    #[test]
    fn what_one_side_writes_the_other_reads_at_the_same_place() {
        let (_mem, p) = region();
        // SAFETY: the block holds REGION_SIZE bytes from `p` and outlives both views.
        let (lib, exe) = unsafe { (LibSide::new(p), ExecSide::new(p, p.add(EXEC_AREA_OFFSET))) };
        let mut st = GuestState {
            rip: 0x0804_8000,
            ..Default::default()
        };
        st.gprs[crate::gpr::R15] = 0xfedc_ba98_7654_3210;
        lib.set_state(&st);
        let cmds = [
            RawCommand {
                kind: CommandKind::InvalidatePage as u32,
                ..Default::default()
            },
            RawCommand {
                kind: CommandKind::FlushAll as u32,
                ..Default::default()
            },
        ];
        lib.set_commands(cmds.iter().copied());
        lib.set_request(Request::Run, 12_345);
        lib.req_seq().store(7, Ordering::Release);
        assert_eq!(exe.req_seq().load(Ordering::Acquire), 7);
        assert_eq!(Request::try_from(exe.request_kind()), Ok(Request::Run));
        assert_eq!(exe.budget_ns(), 12_345);
        assert_eq!(exe.state(), st);
        assert_eq!(exe.commands().collect::<Vec<_>>(), cmds);
        assert_eq!(exe.header().state.rip, 0x0804_8000);

        exe.ready(832, 0x7, true);
        let a = lib.snapshot();
        assert_eq!(
            (a.xsave_size, a.xsave_features, a.cpuid_faulting),
            (832, 0x7, 1)
        );
        assert_eq!(Status::try_from(lib.status()), Ok(Status::Ready));

        let mut rec = ExitRecord::new(ExitReason::Cpuid);
        rec.code_pages.push(0x5000).unwrap();
        let mut raw = RawExit::ZERO;
        rec.encode(&mut raw);
        exe.set_exit(&raw, &st);
        exe.set_status(Status::Exited);
        exe.exec_sleeping().store(1, Ordering::SeqCst);
        exe.resp_seq().store(7, Ordering::Release);
        let a = lib.snapshot();
        assert_eq!(ExitRecord::decode(&a.exit), Ok(rec));
        assert_eq!(a.state, st);
        assert_eq!(lib.resp_seq().load(Ordering::Acquire), 7);
        assert_eq!(lib.exec_sleeping().load(Ordering::SeqCst), 1);

        exe.fail(13, "no");
        let a = lib.snapshot();
        assert_eq!(
            (a.status, a.fail_code, a.msg_len),
            (Status::Failed as u32, 13, 2)
        );
        assert_eq!(&a.msg[..2], b"no");
    }
}
