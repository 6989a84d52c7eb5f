//! The gRPC codec: prost's, except that a message that does not decode is `malformed_message`
//! (INVALID_ARGUMENT, with frostgate's code and recovery class in the metadata) like every other
//! refusal of the API, instead of prost's bare INTERNAL.

use frostgate_common::error::{Error, ErrorCode};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The codec the generated client and server use (`build.rs`: `codec_path`).
#[derive(Debug)]
pub struct FrostgateCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for FrostgateCodec<T, U> {
    fn default() -> Self {
        FrostgateCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for FrostgateCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = TypedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        TypedDecoder(self.0.decoder())
    }
}

/// Prost's decoder with its failures typed.
#[derive(Debug)]
pub struct TypedDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for TypedDecoder<U> {
    type Item = U;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, tonic::Status> {
        self.0.decode(buf).map_err(|s| {
            super::status(&Error::new(
                ErrorCode::MalformedMessage,
                format!("the message does not decode: {}", s.message()),
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
