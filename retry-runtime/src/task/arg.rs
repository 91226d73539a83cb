//! `Arg`: one argument of a Redis command, byte for byte, and its JSON form.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// One argument of a Redis command, kept as the exact bytes Redis saw.
///
/// On the wire it is a JSON string when the bytes are UTF-8 (what the seed writes) and
/// `{"b64": "..."}` otherwise, so binary values survive byte for byte. JSON numbers and booleans
/// from the seed are accepted and turned into the text Redis would have received from go-redis.
///
/// ```
/// use redis_retry_runtime::Arg;
/// let arg: Arg = serde_json::from_str("300").unwrap();
/// assert_eq!(arg.as_bytes(), b"300");
/// let binary = Arg::from(vec![0xff, 0x00]);
/// let json = serde_json::to_string(&binary).unwrap();
/// assert_eq!(json, r#"{"b64":"/wA="}"#);
/// assert_eq!(serde_json::from_str::<Arg>(&json).unwrap(), binary);
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Arg(Vec<u8>);

impl Arg {
    /// The bytes Redis receives.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Consumes the argument, giving its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

// Values must never reach logs, so Debug shows only the size.
impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Arg({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg(v)
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg(v.to_vec())
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg(v.as_bytes().to_vec())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg(v.into_bytes())
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg(v.as_bytes().to_vec())
    }
}
macro_rules! arg_from_display {
    ($($t:ty),*) => {$(
        impl From<$t> for Arg {
            fn from(v: $t) -> Self {
                Arg(v.to_string().into_bytes())
            }
        }
    )*};
}
arg_from_display!(i32, i64, u32, u64, usize, f64);

impl Serialize for Arg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use base64::Engine as _;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("b64", &base64::engine::general_purpose::STANDARD.encode(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ArgVisitor;
        impl<'de> Visitor<'de> for ArgVisitor {
            type Value = Arg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number, a boolean or {\"b64\": \"...\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Arg, E> {
                Ok(Arg::from(v))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Arg, E> {
                Ok(Arg::from(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Arg, E> {
                Ok(Arg::from(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Arg, E> {
                Ok(Arg::from(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Arg, E> {
                // Rust's shortest round-trip form without exponent matches go-redis's
                // strconv.FormatFloat(f, 'f', -1, 64) for the values a repository sends.
                Ok(Arg::from(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Arg, E> {
                // go-redis sends booleans as "1" / "0".
                Ok(Arg::from(if v { "1" } else { "0" }))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Arg, A::Error> {
                use base64::Engine as _;
                let mut out = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "b64" {
                        return Err(de::Error::unknown_field(&key, &["b64"]));
                    }
                    let text: String = map.next_value()?;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(text.as_bytes())
                        // base64's error quotes the offending byte, a piece of the value.
                        .map_err(|_| de::Error::custom("invalid base64 in a b64 argument"))?;
                    out = Some(Arg(bytes));
                }
                out.ok_or_else(|| de::Error::missing_field("b64"))
            }
        }
        d.deserialize_any(ArgVisitor)
    }
}
