//! Enumerations carried as `u32` in the control region. Each is a `repr(u32)` enum with its
//! list of values and a checked decoder: a value read from the other process is never
//! transmuted, and an unknown one is an error that names its field.

use core::fmt;

/// A `u32` from the region that is none of its field's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The field it was read from.
    pub field: &'static str,
    /// The value.
    pub value: u32,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.value)
    }
}

impl std::error::Error for UnknownValue {}

/// Defines a wire enumeration: the enum, `ALL` (in declaration order), `from_u32` and
/// `TryFrom<u32>` (whose error names `$field`).
macro_rules! wire_enum {
    ($(#[$m:meta])* pub enum $name:ident ($field:literal) {
        $($(#[$vm:meta])* $v:ident = $n:literal,)*
    }) => {
        $(#[$m])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $v = $n,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// Decodes a raw value; `None` for unknown values.
            pub const fn from_u32(v: u32) -> Option<Self> {
                match v {
                    $($n => Some($name::$v),)*
                    _ => None,
                }
            }
        }

        impl TryFrom<u32> for $name {
            type Error = $crate::wire::UnknownValue;
            fn try_from(value: u32) -> Result<Self, Self::Error> {
                Self::from_u32(value).ok_or($crate::wire::UnknownValue { field: $field, value })
            }
        }
    };
}
pub(crate) use wire_enum;

#[cfg(test)]
mod tests {
    use crate::{CommandKind, RawReason, Request, Status};

    /// Each list round-trips through `from_u32`, has distinct values, and nothing outside it
    /// decodes (so a dropped, swapped or duplicated arm fails here).
    fn check<T: Copy + PartialEq + core::fmt::Debug>(
        all: &[T],
        raw: fn(T) -> u32,
        dec: fn(u32) -> Option<T>,
    ) {
        for &x in all {
            assert_eq!(dec(raw(x)), Some(x));
        }
        let mut values: Vec<u32> = all.iter().map(|&x| raw(x)).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), all.len(), "values are distinct");
        for v in (0..256).chain([u32::MAX]) {
            assert_eq!(dec(v).is_some(), values.contains(&v), "{v}");
        }
    }

    #[test]
    fn wire_enums_round_trip_and_reject_unknown_values() {
        check(Status::ALL, |x| x as u32, Status::from_u32);
        check(Request::ALL, |x| x as u32, Request::from_u32);
        check(CommandKind::ALL, |x| x as u32, CommandKind::from_u32);
        check(RawReason::ALL, |x| x as u32, RawReason::from_u32);
        assert_eq!(Status::ALL.len(), 5);
        assert_eq!(Request::ALL.len(), 3);
        assert_eq!(CommandKind::ALL.len(), 4);
        // Exit reasons are 1..=N without gaps: the header's exit table and the fuzz generator
        // rely on it.
        let n = RawReason::ALL.len() as u32;
        assert!((1..=n).all(|v| RawReason::from_u32(v).is_some()));
        assert_eq!(RawReason::from_u32(0), None);
        let e = Status::try_from(9).unwrap_err();
        assert_eq!(e.to_string(), "status 9");
    }
}
