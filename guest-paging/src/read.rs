//! Reading guest memory by linear address, for instruction bytes: the executor reads the bytes
//! before a trap to tell INT n from INT3, the library names the instruction behind an exit.

use crate::{walk, walk64, Access, LongRegs, PagingRegs, PhysMemory};

/// Copies bytes at `linear` into `buf` through the guest's page tables, as a CPL 3 instruction
/// fetch that sets no Accessed/Dirty bits, page by page. `read_phys(pa, bytes)` reads guest
/// RAM and may refuse (e.g. device memory). Returns how many leading bytes were read: the copy
/// stops at the first page that does not translate or cannot be read.
pub fn read_linear(
    mem: &dyn PhysMemory,
    regs: &PagingRegs,
    linear: u32,
    buf: &mut [u8],
    mut read_phys: impl FnMut(u64, &mut [u8]) -> bool,
) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let lin = linear.wrapping_add(done as u32);
        let Ok(t) = walk(mem, regs, lin, Access::Fetch, false) else {
            break;
        };
        let offset = lin & 0xfff;
        let take = (0x1000 - offset as usize).min(buf.len() - done);
        if !read_phys(t.phys_page + u64::from(offset), &mut buf[done..done + take]) {
            break;
        }
        done += take;
    }
    done
}

/// [`read_linear`] for 64-bit code, through 4-level tables: the copy also stops where the bytes
/// leave the canonical range (the fetch there is a #GP, not a read). Addresses wrap at 2^64.
pub fn read_linear64(
    mem: &dyn PhysMemory,
    regs: &LongRegs,
    linear: u64,
    buf: &mut [u8],
    mut read_phys: impl FnMut(u64, &mut [u8]) -> bool,
) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let lin = linear.wrapping_add(done as u64);
        let Ok(t) = walk64(mem, regs, lin, Access::Fetch, false) else {
            break;
        };
        let offset = lin & 0xfff;
        let take = (0x1000 - offset as usize).min(buf.len() - done);
        if !read_phys(t.phys_page + offset, &mut buf[done..done + take]) {
            break;
        }
        done += take;
    }
    done
}
