//! CTranslate2 model directories (`model.bin` + `config.json` + vocabulary), as
//! `faster-whisper` and the PyPI Whisper packages ship them.
//!
//! | file | concern |
//! | --- | --- |
//! | [`reader`] | `model.bin`: header, spec name and revision, variables, aliases, dtypes |
//! | [`whisper`] | `WhisperSpec` revision 3 -> HF Whisper names (fused QKV split), config |
//! | [`error`] | [`Ct2Error`] |
//!
//! ```no_run
//! use burn::backend::Flex;
//! use models::ct2::load_whisper_ct2;
//! use models::whisper::WhisperAdapter;
//! let model = load_whisper_ct2::<Flex>("whisper-tiny.en-ct2", &WhisperAdapter::none(), &Default::default())?;
//! # Ok::<(), models::ct2::Ct2Error>(())
//! ```

pub mod error;
pub mod reader;
pub mod whisper;

pub use error::{Ct2Error, Result};
pub use reader::{Ct2Dtype, Ct2Model, Variable};
pub use whisper::{
    check_whisper_spec, is_ct2_dir, load_whisper_any, load_whisper_any_in, load_whisper_ct2,
    load_whisper_ct2_in, vocabulary_token_id, whisper_config, whisper_config_json,
    whisper_hf_tensors,
};
