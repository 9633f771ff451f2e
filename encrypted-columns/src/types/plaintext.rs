//! How each plaintext type becomes bytes before sealing, and back after opening.
//!
//! Encodings are fixed and documented in FORMAT.md so other languages can read our data:
//! strings are UTF-8, integers and floats big-endian, dates fixed-width binary, JSON compact
//! UTF-8. Decoding errors describe the shape of the problem, never the bytes.

use zeroize::{Zeroize, Zeroizing};

/// A Rust type that can be stored encrypted: a fixed byte encoding both ways.
///
/// Implement it for your own types (a UUID, a newtype) when the built-in ones do not fit.
/// `encode` appends to `out`, which already holds the envelope header; `decode` receives the
/// opened bytes in a buffer that is wiped when dropped. Error strings must not quote the data.
///
/// ```
/// use encrypted_columns::Plaintext;
///
/// #[derive(Clone, PartialEq)]
/// struct Mrn(u32); // medical record number
///
/// impl Plaintext for Mrn {
///     const TYPE_NAME: &'static str = "Mrn";
///     fn encoded_len(&self) -> usize { 4 }
///     fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
///         out.extend_from_slice(&self.0.to_be_bytes());
///         Ok(())
///     }
///     fn decode(bytes: zeroize::Zeroizing<Vec<u8>>) -> Result<Self, String> {
///         let arr: [u8; 4] = bytes.as_slice().try_into().map_err(|_| "expected 4 bytes".to_string())?;
///         Ok(Mrn(u32::from_be_bytes(arr)))
///     }
/// }
/// ```
pub trait Plaintext: Clone + PartialEq + Send + Sync + 'static {
    /// Name used in errors and SeaORM type names.
    const TYPE_NAME: &'static str;
    /// Exact encoded length if cheap to know, else a good guess.
    fn encoded_len(&self) -> usize;
    /// Appends the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String>;
    /// Parses an encoding produced by [`Plaintext::encode`].
    fn decode(bytes: Zeroizing<Vec<u8>>) -> Result<Self, String>;
    /// Wipes the value's memory; called when an `Encrypted` is dropped. Types that own heap
    /// plaintext (strings, byte vectors) override it.
    fn wipe(&mut self) {}
}

impl Plaintext for String {
    const TYPE_NAME: &'static str = "String";
    fn encoded_len(&self) -> usize {
        self.len()
    }
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }
    fn decode(mut bytes: Zeroizing<Vec<u8>>) -> Result<Self, String> {
        String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
            let valid_up_to = e.utf8_error().valid_up_to();
            wipe_bytes(&mut e.into_bytes());
            format!("invalid UTF-8 after byte {valid_up_to}")
        })
    }
    fn wipe(&mut self) {
        wipe_bytes(&mut std::mem::take(self).into_bytes());
    }
}

impl Plaintext for Vec<u8> {
    const TYPE_NAME: &'static str = "Vec<u8>";
    fn encoded_len(&self) -> usize {
        self.len()
    }
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.extend_from_slice(self);
        Ok(())
    }
    fn decode(mut bytes: Zeroizing<Vec<u8>>) -> Result<Self, String> {
        Ok(std::mem::take(&mut *bytes))
    }
    fn wipe(&mut self) {
        wipe_bytes(self);
    }
}

/// Zeroes every byte of `buf`'s allocation (contents and spare capacity), then empties it.
///
/// What `Vec::<u8>::zeroize` promises, but in bulk: `zeroize` on a `[u8]` or
/// `[MaybeUninit<u8>]` slice is a `memset` followed by an optimization barrier, whereas
/// `Vec::zeroize` zeroizes element by element, one volatile byte store at a time. For a 1 KiB
/// string that loop was 15% of the instructions of sealing a value and dropping it
/// (callgrind, BENCHMARKS.md); every value read from the database pays it once more on drop.
pub(crate) fn wipe_bytes(buf: &mut Vec<u8>) {
    buf.as_mut_slice().zeroize();
    buf.spare_capacity_mut().zeroize();
    buf.clear();
}

fn exact<const N: usize>(bytes: &[u8], type_name: &str) -> Result<[u8; N], String> {
    bytes
        .try_into()
        .map_err(|_| format!("{type_name} is {N} bytes, found {}", bytes.len()))
}

macro_rules! big_endian_number {
    ($($ty:ty),*) => {$(
        impl Plaintext for $ty {
            const TYPE_NAME: &'static str = stringify!($ty);
            fn encoded_len(&self) -> usize {
                std::mem::size_of::<$ty>()
            }
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
                out.extend_from_slice(&self.to_be_bytes());
                Ok(())
            }
            fn decode(bytes: Zeroizing<Vec<u8>>) -> Result<Self, String> {
                Ok(<$ty>::from_be_bytes(exact(&bytes, stringify!($ty))?))
            }
        }
    )*};
}
big_endian_number!(i16, i32, i64, u32, u64, f32, f64);

impl Plaintext for bool {
    const TYPE_NAME: &'static str = "bool";
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
        out.push(u8::from(*self));
        Ok(())
    }
    fn decode(bytes: Zeroizing<Vec<u8>>) -> Result<Self, String> {
        match bytes.as_slice() {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err("bool is one byte, 0x00 or 0x01".into()),
        }
    }
}

#[cfg(feature = "chrono")]
mod dates {
    use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

    use super::*;

    // 1970-01-01 is day 0, so dates are i32 days from the Unix epoch, big-endian.
    const EPOCH_DAYS_FROM_CE: i32 = 719_163;

    impl Plaintext for NaiveDate {
        const TYPE_NAME: &'static str = "NaiveDate";
        fn encoded_len(&self) -> usize {
            4
        }
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
            let days = chrono::Datelike::num_days_from_ce(self) - EPOCH_DAYS_FROM_CE;
            out.extend_from_slice(&days.to_be_bytes());
            Ok(())
        }
        fn decode(bytes: Zeroizing<Vec<u8>>) -> Result<Self, String> {
            let days = i32::from_be_bytes(exact(&bytes, "NaiveDate")?);
            days.checked_add(EPOCH_DAYS_FROM_CE)
                .and_then(NaiveDate::from_num_days_from_ce_opt)
                .ok_or_else(|| "day number out of chrono's date range".to_string())
        }
    }

    // Date-times are i64 seconds from the Unix epoch then u32 nanoseconds, big-endian: fixed
    // width so lengths reveal nothing, and the full chrono range fits.
    fn encode_utc(dt: &NaiveDateTime, out: &mut Vec<u8>) {
        let utc = dt.and_utc();
        out.extend_from_slice(&utc.timestamp().to_be_bytes());
        out.extend_from_slice(&utc.timestamp_subsec_nanos().to_be_bytes());
    }

    fn decode_utc(bytes: &[u8], type_name: &str) -> Result<DateTime<Utc>, String> {
        let raw: [u8; 12] = exact(bytes, type_name)?;
        let (secs, nanos) = raw.split_at(8);
        let secs = i64::from_be_bytes(exact(secs, type_name)?);
        let nanos = u32::from_be_bytes(exact(nanos, type_name)?);
        DateTime::from_timestamp(secs, nanos)
            .ok_or_else(|| format!("{type_name} out of chrono's range"))
    }

    impl Plaintext for NaiveDateTime {
        const TYPE_NAME: &'static str = "NaiveDateTime";
        fn encoded_len(&self) -> usize {
            12
        }
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
            encode_utc(self, out);
            Ok(())
        }
        fn decode(bytes: Zeroizing<Vec<u8>>) -> Result<Self, String> {
            decode_utc(&bytes, "NaiveDateTime").map(|dt| dt.naive_utc())
        }
    }

    impl Plaintext for DateTime<Utc> {
        const TYPE_NAME: &'static str = "DateTime<Utc>";
        fn encoded_len(&self) -> usize {
            12
        }
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
            encode_utc(&self.naive_utc(), out);
            Ok(())
        }
        fn decode(bytes: Zeroizing<Vec<u8>>) -> Result<Self, String> {
            decode_utc(&bytes, "DateTime<Utc>")
        }
    }
}

#[cfg(feature = "json")]
mod json {
    use serde::{Serialize, de::DeserializeOwned};

    use super::*;

    /// A serde value stored as compact JSON inside an envelope: the plaintext of
    /// [`EncryptedJson`](crate::EncryptedJson).
    ///
    /// ```
    /// use encrypted_columns::Json;
    /// let segments = Json(vec!["Doctor: hello".to_string()]);
    /// assert_eq!(segments.len(), 1); // derefs to the inner value
    /// ```
    #[derive(
        Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
    )]
    #[serde(transparent)]
    pub struct Json<T>(pub T);

    impl<T> std::ops::Deref for Json<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.0
        }
    }

    impl<T> std::ops::DerefMut for Json<T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.0
        }
    }

    impl<T> Plaintext for Json<T>
    where
        T: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static,
    {
        const TYPE_NAME: &'static str = "Json";
        fn encoded_len(&self) -> usize {
            // Unknown until serialized; `encode` reserves the exact length itself.
            0
        }
        fn encode(&self, out: &mut Vec<u8>) -> Result<(), String> {
            // Serialize into a scratch buffer wiped on drop, then copy once into `out` after
            // reserving its exact length: `out` never reallocates while holding plaintext.
            let mut json = Zeroizing::new(Vec::new());
            // serde_json's messages can quote the data: keep only the error category.
            serde_json::to_writer(&mut *json, &self.0)
                .map_err(|e| format!("serde_json refused the value ({:?} error)", e.classify()))?;
            // serde_json writes NaN and infinities as `null`, and custom Serialize impls can be
            // lossy too: refuse what would not read back equal, rather than store a row that
            // fails (or differs) on every read.
            match serde_json::from_slice::<T>(&json) {
                Ok(back) if back == self.0 => {}
                _ => {
                    return Err(
                        "the value does not read back equal from JSON (NaN or infinite \
                                floats, or a lossy Serialize impl); store such values another way"
                            .into(),
                    );
                }
            }
            out.reserve_exact(json.len());
            out.extend_from_slice(&json);
            Ok(())
        }
        fn decode(bytes: Zeroizing<Vec<u8>>) -> Result<Self, String> {
            serde_json::from_slice(&bytes).map(Json).map_err(|e| {
                format!(
                    "JSON does not fit the target type ({:?} error at line {}, column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                )
            })
        }
    }
}

#[cfg(feature = "json")]
pub use json::Json;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_bytes_zeroes_contents_and_spare_capacity() {
        let mut buf = b"secret plaintext".to_vec();
        buf.reserve(64);
        let capacity = buf.capacity();
        wipe_bytes(&mut buf);
        assert!(buf.is_empty());
        assert_eq!(
            buf.capacity(),
            capacity,
            "the allocation is kept, only zeroed"
        );
        let spare = buf.spare_capacity_mut();
        assert_eq!(spare.len(), capacity);
        // SAFETY: `wipe_bytes` wrote zeros over the whole allocation, so every byte of the
        // spare capacity is initialized.
        assert!(spare.iter().all(|b| unsafe { b.assume_init() } == 0));

        let mut text = String::from("ada@example.org");
        text.wipe();
        assert!(text.is_empty());
    }

    fn round_trip<T: Plaintext + std::fmt::Debug>(value: T) {
        let mut out = Vec::new();
        value.encode(&mut out).expect("encodes");
        assert_eq!(T::decode(Zeroizing::new(out)).expect("decodes"), value);
    }

    #[test]
    fn scalars_round_trip() {
        round_trip(i64::MIN);
        round_trip(-1i32);
        round_trip(3.25f64);
        round_trip(true);
        round_trip(String::from("Zoë"));
        round_trip(vec![0u8, 255]);
    }

    #[cfg(feature = "chrono")]
    #[test]
    fn dates_round_trip_at_edges() {
        use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
        round_trip(NaiveDate::MIN);
        round_trip(NaiveDate::MAX);
        round_trip(NaiveDate::from_ymd_opt(1970, 1, 1).expect("date"));
        round_trip(NaiveDateTime::MIN);
        round_trip(NaiveDateTime::MAX);
        round_trip(DateTime::<Utc>::from_timestamp(1_700_000_000, 123_456_789).expect("ts"));
        let mut out = Vec::new();
        NaiveDate::from_ymd_opt(1970, 1, 2)
            .expect("date")
            .encode(&mut out)
            .expect("enc");
        assert_eq!(out, [0, 0, 0, 1]);
    }

    #[test]
    fn decode_errors_do_not_quote_data() {
        let err = String::decode(Zeroizing::new(b"secret\xff".to_vec())).unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        assert!(bool::decode(Zeroizing::new(vec![2])).is_err());
        assert!(i64::decode(Zeroizing::new(vec![1, 2])).is_err());
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_that_would_not_read_back_is_refused() {
        let mut out = Vec::new();
        let err = Json(vec![1.0, f64::NAN]).encode(&mut out).unwrap_err();
        assert!(err.contains("NaN"), "{err}");
        assert!(out.is_empty(), "nothing written on refusal");
        Json(vec![1.0, f64::MAX])
            .encode(&mut out)
            .expect("finite floats are fine");
        assert_eq!(out, b"[1.0,1.7976931348623157e+308]");
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_errors_do_not_quote_data() {
        let err = Json::<u32>::decode(Zeroizing::new(br#""Alice Secret""#.to_vec())).unwrap_err();
        assert!(!err.contains("Alice"), "{err}");
    }
}
