//! JSON-object checks both ways: the seed's models take `dict`s only.
//!
//! pydantic's `payload: dict` and `output: Optional[dict]` reject a list or a
//! string, and `AgentTask(**json.loads(raw))` rejects a top level that is not
//! an object; serde would happily read a struct from an array. These helpers
//! hold crewq to the seed's rule when decoding and when encoding.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Impossible, Serialize, Serializer};

/// Deserializes `T` from a JSON object only; anything else is a type error
/// that says it expected `expecting`.
pub(crate) fn deserialize_object<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectVisitor<T> {
        expecting: &'static str,
        marker: PhantomData<T>,
    }

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectVisitor {
        expecting,
        marker: PhantomData,
    })
}

/// What a value serializes to at its top level, when that is not an object.
///
/// `Ok(())` for an object (a map or a struct); otherwise the JSON type it
/// would be, or the serializer's own failure.
pub(crate) fn check_object<T: Serialize + ?Sized>(value: &T) -> Result<(), String> {
    match value.serialize(TopLevel) {
        Err(Found::Object) => Ok(()),
        Err(Found::Other(kind)) => Err(format!("a JSON object, not {kind}")),
        Err(Found::Failed(message)) => Err(message),
        // Every method returns an error; a Serialize impl that returns Ok
        // without calling the serializer wrote nothing at all.
        Ok(()) => Err("a JSON object, not nothing".to_owned()),
    }
}

/// A serializer that stops at the first call and reports what it was.
///
/// Stopping with an error means a large payload costs nothing to check: the
/// value's `Serialize` returns as soon as it has called `serialize_map`.
struct TopLevel;

#[derive(Debug)]
enum Found {
    Object,
    Other(&'static str),
    Failed(String),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Object => f.write_str("an object"),
            Found::Other(kind) => f.write_str(kind),
            Found::Failed(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Found {}

impl serde::ser::Error for Found {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Found::Failed(msg.to_string())
    }
}

macro_rules! found_other {
    ($($method:ident($($ty:ty),*) => $kind:literal;)*) => {$(
        fn $method(self $(, _: $ty)*) -> Result<(), Found> {
            Err(Found::Other($kind))
        }
    )*};
}

impl Serializer for TopLevel {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Impossible<(), Found>;
    type SerializeTuple = Impossible<(), Found>;
    type SerializeTupleStruct = Impossible<(), Found>;
    type SerializeTupleVariant = Impossible<(), Found>;
    type SerializeMap = Impossible<(), Found>;
    type SerializeStruct = Impossible<(), Found>;
    type SerializeStructVariant = Impossible<(), Found>;

    found_other! {
        serialize_bool(bool) => "a boolean";
        serialize_i8(i8) => "a number";
        serialize_i16(i16) => "a number";
        serialize_i32(i32) => "a number";
        serialize_i64(i64) => "a number";
        serialize_i128(i128) => "a number";
        serialize_u8(u8) => "a number";
        serialize_u16(u16) => "a number";
        serialize_u32(u32) => "a number";
        serialize_u64(u64) => "a number";
        serialize_u128(u128) => "a number";
        serialize_f32(f32) => "a number";
        serialize_f64(f64) => "a number";
        serialize_char(char) => "a string";
        serialize_str(&str) => "a string";
        serialize_bytes(&[u8]) => "an array";
        serialize_none() => "null";
        serialize_unit() => "null";
        serialize_unit_struct(&'static str) => "null";
        serialize_unit_variant(&'static str, u32, &'static str) => "a string";
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Found> {
        // `Some(x)` is written as `x`.
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Found> {
        // A newtype is written as what it wraps.
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Found> {
        // `{"Variant": value}`: an object, as serde_json writes it.
        Err(Found::Object)
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Found> {
        Err(Found::Other("an array"))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Found> {
        Err(Found::Other("an array"))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Found> {
        Err(Found::Other("an array"))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Found> {
        Err(Found::Object)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Found> {
        Err(Found::Object)
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Found> {
        Err(Found::Object)
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Found> {
        Err(Found::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_and_structs_pass_the_check() {
        #[derive(serde::Serialize)]
        struct Payload {
            repo: String,
        }
        assert_eq!(check_object(&json!({"a": 1})), Ok(()));
        assert_eq!(check_object(&json!({})), Ok(()));
        assert_eq!(check_object(&Payload { repo: "r".into() }), Ok(()));
        let map: std::collections::BTreeMap<String, u8> = [("k".into(), 1)].into();
        assert_eq!(check_object(&map), Ok(()));
        assert_eq!(check_object(&Some(json!({}))), Ok(()));
    }

    #[test]
    fn anything_else_fails_the_check_naming_its_type() {
        assert_eq!(
            check_object(&json!([1])),
            Err("a JSON object, not an array".into())
        );
        assert_eq!(
            check_object(&json!(null)),
            Err("a JSON object, not null".into())
        );
        assert_eq!(
            check_object(&json!("x")),
            Err("a JSON object, not a string".into())
        );
        assert_eq!(
            check_object(&7_u8),
            Err("a JSON object, not a number".into())
        );
        assert_eq!(
            check_object(&Option::<u8>::None),
            Err("a JSON object, not null".into())
        );
    }

    #[test]
    fn deserialize_object_refuses_arrays_that_serde_would_read_as_structs() {
        #[derive(Debug, PartialEq, serde::Deserialize)]
        struct Pair {
            a: String,
            b: String,
        }
        #[derive(Debug, PartialEq)]
        struct Only(Pair);
        impl<'de> Deserialize<'de> for Only {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                deserialize_object(d, "a pair as a JSON object").map(Only)
            }
        }
        assert!(serde_json::from_str::<Pair>(r#"["x", "y"]"#).is_ok());
        let err = serde_json::from_str::<Only>(r#"["x", "y"]"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("expected a pair as a JSON object"), "{err}");
        let pair = serde_json::from_str::<Only>(r#"{"a": "x", "b": "y"}"#).expect("object");
        assert_eq!(
            pair,
            Only(Pair {
                a: "x".into(),
                b: "y".into()
            })
        );
    }
}
