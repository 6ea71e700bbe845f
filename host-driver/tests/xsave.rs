//! The x87/SSE/AVX/AVX-512 state crosses an entry and an exit bit-exactly.

use host_driver::{ExitReason, XsaveImage};
use iced_x86::code_asm::*;
use test_support::both_executors;
use test_support::vm::*;

fn distinct_image(info: &host_driver::XsaveInfo) -> XsaveImage {
    let features = info.features;
    let mut img = XsaveImage([0; 4096]);
    let b = &mut img.0;
    b[0..2].copy_from_slice(&0x0c7au16.to_le_bytes()); // FCW: RC=11, some masks cleared
    b[2..4].copy_from_slice(&0x7d00u16.to_le_bytes()); // FSW: C3, TOP=7, C2, C0 (no ES)
    b[4] = 0xa5; // abridged FTW
    b[24..28].copy_from_slice(&0xffc5u32.to_le_bytes()); // MXCSR: FZ, RC, masks, DAZ, flags
    let mut n: u32 = 0x1000_0001;
    let mut next = || {
        n = n.wrapping_mul(0x9e37_79b9).wrapping_add(0x7f4a_7c15);
        n
    };
    for st in 0..8 {
        // 80-bit value in a 16-byte slot; the upper 6 bytes are reserved (zero).
        let off = 32 + st * 16;
        for w in 0..2 {
            b[off + w * 4..off + w * 4 + 4].copy_from_slice(&next().to_le_bytes());
        }
        b[off + 8..off + 10].copy_from_slice(&((next() & 0x7fff) as u16 | 0x4000).to_le_bytes());
    }
    for off in (160..416).step_by(4) {
        b[off..off + 4].copy_from_slice(&next().to_le_bytes());
    }
    let mut bv = 3u64;
    for (bit, &(off, len)) in info.components.iter().enumerate().skip(2) {
        let (off, len) = (off as usize, len as usize);
        if features & (1 << bit) != 0 {
            for o in (off..off + len).step_by(4) {
                b[o..o + 4].copy_from_slice(&next().to_le_bytes());
            }
            bv |= 1 << bit;
        }
    }
    img.set_u64_at(512, bv);
    img
}

/// Bytes that do not round-trip by design: FOP/FIP/FDP (AMD saves them only with a pending
/// exception) — everything else must.
fn comparable(i: usize) -> bool {
    !(6..24).contains(&i)
}

both_executors! {
    #[test]
    fn xsave_round_trip_is_bit_exact() {
        let mut vm = Vm::new(Mode::TwoLevel);
        let info = vm.exe.xsave_info();
        assert!(info.features & 3 == 3 && info.size >= 576);
        vm.state.xcr0 = info.features;
        vm.state.xsave = distinct_image(&info);
        vm.code(|a| {
            a.nop()?;
            a.hlt()
        });
        let before = vm.state.xsave;
        let exit = vm.run();
        assert_eq!(exit.reason, ExitReason::Privileged);
        let after = vm.state.xsave;
        for i in (0..info.size as usize).filter(|&i| comparable(i)) {
            assert_eq!(
                after.0[i], before.0[i],
                "byte {i} (features {:#x})",
                info.features
            );
        }
        // And again, through a second entry.
        let exit = vm.run();
        assert_eq!(exit.reason, ExitReason::Privileged);
        for i in (0..info.size as usize).filter(|&i| comparable(i)) {
            assert_eq!(
                vm.state.xsave.0[i], before.0[i],
                "byte {i} after the second run"
            );
        }
    }
}

both_executors! {
    #[test]
    fn guest_sse_and_avx_results_come_back() {
        let mut vm = Vm::new(Mode::TwoLevel);
        let info = vm.exe.xsave_info();
        vm.state.xcr0 = info.features & 0x7;
        let img = &mut vm.state.xsave;
        for i in 0..4u32 {
            img.0[160 + 4 * i as usize..164 + 4 * i as usize].copy_from_slice(&(i + 1).to_le_bytes()); // xmm0
            img.0[176 + 4 * i as usize..180 + 4 * i as usize].copy_from_slice(&(10 * i).to_le_bytes());
            // xmm1
        }
        vm.code(|a| {
            a.paddd(xmm0, xmm1)?;
            a.hlt()
        });
        assert_eq!(vm.run().reason, ExitReason::Privileged);
        let x = &vm.state.xsave.0;
        let lanes: Vec<u32> = (0..4)
            .map(|i| u32::from_le_bytes(x[160 + 4 * i..164 + 4 * i].try_into().unwrap()))
            .collect();
        assert_eq!(lanes, vec![1, 12, 23, 34]);
        if info.features & 4 != 0 {
            // vpaddd ymm2, ymm0, ymm0 writes the upper half of YMM2 (zero) and the lower half.
            vm.state.rip = u64::from(CODE + 0x10);
            vm.code_at(CODE + 0x10, |a| {
                a.vpaddd(ymm2, ymm0, ymm0)?;
                a.hlt()
            });
            assert_eq!(vm.run().reason, ExitReason::Privileged);
            let x = &vm.state.xsave.0;
            assert_eq!(u32::from_le_bytes(x[192..196].try_into().unwrap()), 2);
            assert_eq!(vm.state.xsave.xstate_bv() & 4, 4);
        }
    }
}

both_executors! {
    #[test]
    fn invalid_xsave_images_are_refused() {
        let mut vm = Vm::new(Mode::TwoLevel);
        vm.code(|a| a.hlt());
        let good = vm.state;
        vm.state.xsave.set_u64_at(520, 1 << 63); // compacted format
        assert!(matches!(
            vm.exe
                .run(&mut vm.state, std::time::Duration::from_millis(10), &[]),
            Err(host_driver::DriverError::UnsupportedState(_))
        ));
        vm.state = good;
        vm.state.xsave.set_u64_at(512, 0x3 | 4); // AVX state without AVX in XCR0
        assert!(vm
            .exe
            .run(&mut vm.state, std::time::Duration::from_millis(10), &[])
            .is_err());
        vm.state = good;
        vm.state.xcr0 = 1 << 9; // PKRU: not offered to guests
        assert!(vm
            .exe
            .run(&mut vm.state, std::time::Duration::from_millis(10), &[])
            .is_err());
        vm.state = good;
        assert_eq!(
            vm.run().reason,
            ExitReason::Privileged,
            "the executor is still fine"
        );
    }
}
