//! Speech evaluation: transcribe every utterance with the method's inference ranks and score
//! WER / CER / ACC with the same scoring as text ([`crate::eval::score`]).

use std::path::Path;

use burn::tensor::backend::Backend;
use datasets::Example;
use flexi_burn::params::activated_params_by_rank;
use models::whisper::{
    TranscribeOptions, Whisper, WhisperTokenizer, load_audio, transcribe_with_ranks,
};

use crate::error::{InferError, Result};
use crate::eval::{EvalReport, RankPolicy, check_unique_ids, score};

/// The audio file of a speech example.
pub fn audio_of(ex: &Example) -> Result<&Path> {
    ex.audio.as_deref().ok_or_else(|| {
        InferError::Invalid(format!(
            "example {} has no audio file (not a speech data set?)",
            ex.id
        ))
    })
}

/// The 16 kHz mono samples of a speech example's audio file. A file that cannot be read, is
/// empty or is silent (every sample 0) is an error naming the file: a transcribed utterance
/// needs speech.
pub fn load_utterance(ex: &Example) -> Result<Vec<f32>> {
    let path = audio_of(ex)?;
    let samples = load_audio(path)?;
    crate::router::utterance_samples(&path.display().to_string(), &samples)?;
    Ok(samples)
}

/// `(file name, samples)` of every example's audio ([`load_utterance`]): named by file, so
/// errors of the router's features name the file.
pub fn load_utterances(examples: &[&Example]) -> Result<Vec<(String, Vec<f32>)>> {
    examples
        .iter()
        .map(|e| Ok((audio_of(e)?.display().to_string(), load_utterance(e)?)))
        .collect()
}

/// Transcribes every example in batches of `batch_size` (batch `i` takes the ranks
/// `policy.batch_ranks(i, ..)`) and scores the transcripts.
pub fn evaluate_speech<B: Backend>(
    model: &Whisper<B>,
    tokenizer: &WhisperTokenizer,
    examples: &[Example],
    policy: &RankPolicy,
    batch_size: usize,
    title: &str,
) -> Result<EvalReport> {
    if examples.is_empty() {
        return Err(InferError::Invalid("no example to evaluate".into()));
    }
    if batch_size == 0 {
        return Err(InferError::Invalid("batch_size must be at least 1".into()));
    }
    check_unique_ids(examples, title)?;
    let audios: Vec<(String, Vec<f32>)> = examples
        .iter()
        .map(|e| Ok((e.id.clone(), load_utterance(e)?)))
        .collect::<Result<_>>()?;
    let answers = transcribe_with_policy(model, tokenizer, &audios, policy, batch_size)?;
    Ok(score(
        examples,
        &answers,
        title,
        &activated_params_by_rank(model),
    ))
}

/// Transcribes `audios` (`(name, 16 kHz mono samples)`) in batches of `batch_size`, batch `i`
/// at `policy.batch_ranks(i, ..)`: each transcript with the rank it used.
pub fn transcribe_with_policy<B: Backend>(
    model: &Whisper<B>,
    tokenizer: &WhisperTokenizer,
    audios: &[(String, Vec<f32>)],
    policy: &RankPolicy,
    batch_size: usize,
) -> Result<Vec<(String, usize)>> {
    let batch_size = batch_size.max(1);
    let order: Vec<usize> = (0..audios.len()).collect();
    let mut ranks = Vec::with_capacity(audios.len());
    for (batch_index, chunk) in order.chunks(batch_size).enumerate() {
        ranks.extend_from_slice(policy.batch_ranks(batch_index, chunk)?.as_slice());
    }
    let options = TranscribeOptions {
        batch_size,
        ..Default::default()
    };
    let device = model.encoder.conv1.weight.device();
    let texts = transcribe_with_ranks(model, tokenizer, audios, &ranks, &options, &device)?;
    Ok(texts.into_iter().zip(ranks).collect())
}
