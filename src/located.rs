//! `file:line:col: message`, the one form of every located config error
//! (inventories and playbooks), so editors and terminals can jump to it.

use std::fmt;
use std::path::Path;

/// Writes `file[:line[:col]]: message` (1-based line and column).
pub(crate) fn write(
    f: &mut fmt::Formatter<'_>,
    file: &Path,
    line: Option<usize>,
    col: Option<usize>,
    message: &str,
) -> fmt::Result {
    write!(f, "{}", file.display())?;
    if let Some(line) = line {
        write!(f, ":{line}")?;
        if let Some(col) = col {
            write!(f, ":{col}")?;
        }
    }
    write!(f, ": {message}")
}

/// serde-saphyr's message carries a source excerpt; keep only its first line
/// without the "line N column M" prefix (we print file:line:col ourselves).
pub(crate) fn first_message_line(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.find(": ") {
        Some(i) if first.starts_with("line ") => first[i + 2..].to_string(),
        _ => first.to_string(),
    }
}

/// A 1-based source position. `col == 0` means "column unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub line: usize,
    pub col: usize,
}

impl Loc {
    pub fn new(line: usize, col: usize) -> Loc {
        Loc { line, col }
    }

    /// serde-saphyr's location, or `None` where it has none (line 0).
    pub fn of(l: &serde_saphyr::Location) -> Option<Loc> {
        let (line, col) = (l.line(), l.column());
        if line == 0 {
            return None;
        }
        Some(Loc::new(
            usize::try_from(line).unwrap_or(usize::MAX),
            usize::try_from(col).unwrap_or(0),
        ))
    }
}

pub(crate) use tree::{Key, Kind, Node};

/// One located YAML tree for the config files read key by key (the credentials file, the
/// Active Directory source): every node knows where it starts, so each message names
/// `file:line:col` and the key, and is our own. serde's type errors quote the offending
/// scalar (`invalid type: string "hunter2"`), which in the credentials file is a password;
/// walking this tree, no message needs a value. Strings are wiped when the tree is dropped.
mod tree {
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_saphyr::Spanned;
    use zeroize::Zeroizing;

    use super::Loc;

    #[derive(Debug)]
    pub(crate) struct Node {
        pub loc: Option<Loc>,
        pub kind: Kind,
    }

    #[derive(Debug)]
    pub(crate) enum Kind {
        Null,
        Bool(bool),
        Int(i64),
        /// An integer outside `i64`, as written.
        BigInt(String),
        Float(f64),
        Str(Zeroizing<String>),
        Seq(Vec<Node>),
        /// A mapping's keys and values, in file order.
        Map(Vec<(Key, Node)>),
    }

    #[derive(Debug)]
    pub(crate) struct Key {
        pub loc: Option<Loc>,
        pub name: String,
    }

    impl Kind {
        /// What the node is, for "found ..." messages (never its value).
        pub fn what(&self) -> &'static str {
            match self {
                Kind::Null => "null",
                Kind::Bool(_) => "a boolean",
                Kind::Int(_) | Kind::BigInt(_) | Kind::Float(_) => "a number",
                Kind::Str(_) => "a string",
                Kind::Seq(_) => "a list",
                Kind::Map(_) => "a mapping",
            }
        }
    }

    impl<'de> Deserialize<'de> for Node {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = Spanned::<Kind>::deserialize(d)?;
            Ok(Node {
                loc: Loc::of(&s.referenced),
                kind: s.value,
            })
        }
    }

    impl<'de> Deserialize<'de> for Key {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = Spanned::<String>::deserialize(d)?;
            Ok(Key {
                loc: Loc::of(&s.referenced),
                name: s.value,
            })
        }
    }

    impl<'de> Deserialize<'de> for Kind {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(KindVisitor)
        }
    }

    struct KindVisitor;

    impl<'de> Visitor<'de> for KindVisitor {
        type Value = Kind;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any YAML value")
        }
        fn visit_unit<E>(self) -> Result<Kind, E> {
            Ok(Kind::Null)
        }
        fn visit_none<E>(self) -> Result<Kind, E> {
            Ok(Kind::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
            d.deserialize_any(KindVisitor)
        }
        fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
            Ok(Kind::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
            Ok(Kind::Int(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
            Ok(i64::try_from(v).map_or_else(|_| Kind::BigInt(v.to_string()), Kind::Int))
        }
        fn visit_i128<E>(self, v: i128) -> Result<Kind, E> {
            Ok(Kind::BigInt(v.to_string()))
        }
        fn visit_u128<E>(self, v: u128) -> Result<Kind, E> {
            Ok(Kind::BigInt(v.to_string()))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
            Ok(Kind::Float(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
            Ok(Kind::Str(Zeroizing::new(v.to_string())))
        }
        fn visit_string<E>(self, v: String) -> Result<Kind, E> {
            Ok(Kind::Str(Zeroizing::new(v)))
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Kind, E> {
            Ok(Kind::Str(Zeroizing::new(
                String::from_utf8_lossy(v).into_owned(),
            )))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
            let mut items = Vec::new();
            while let Some(n) = a.next_element::<Node>()? {
                items.push(n);
            }
            Ok(Kind::Seq(items))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Kind, A::Error> {
            let mut entries = Vec::new();
            while let Some(k) = a.next_key::<Key>()? {
                let v = a.next_value::<Node>()?;
                entries.push((k, v));
            }
            Ok(Kind::Map(entries))
        }
        fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
            d.deserialize_any(KindVisitor)
        }
        fn visit_enum<A: de::EnumAccess<'de>>(self, _a: A) -> Result<Kind, A::Error> {
            Err(de::Error::custom("unexpected tagged value"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Kind, Loc, Node};

    #[test]
    fn the_tree_keeps_where_each_key_and_value_starts_and_what_it_is() {
        let text = "a:\n  b: hunter2\n  n: 18446744073709551615\n  l: [1, true]\nz: ~\n";
        let root: Node = serde_saphyr::from_str(text).expect("valid YAML");
        let Kind::Map(top) = root.kind else {
            panic!("top is {}", root.kind.what());
        };
        assert_eq!(top[0].0.name, "a");
        assert_eq!(top[0].0.loc, Some(Loc::new(1, 1)));
        let Kind::Map(inner) = &top[0].1.kind else {
            panic!("a is {}", top[0].1.kind.what());
        };
        assert!(matches!(&inner[0].1.kind, Kind::Str(s) if s.as_str() == "hunter2"));
        assert_eq!(inner[0].1.loc.map(|l| l.line), Some(2));
        // Past i64: kept as written, reported as a number (never a string).
        assert!(matches!(&inner[1].1.kind, Kind::BigInt(s) if s == "18446744073709551615"));
        assert_eq!(inner[1].1.kind.what(), "a number");
        assert!(matches!(&inner[2].1.kind, Kind::Seq(items) if items.len() == 2));
        assert_eq!(top[1].1.kind.what(), "null");
    }
}
