//! The tokenizer against the Python `tokenizers` ids, and the chat templates.

mod common;

use common::{fixture, reference};
use models::llama::{ChatTemplate, Message, Tokenizer};

const TEXT: &str = "The quick brown fox jumps over the lazy dog. Hello, world!";

#[test]
fn encode_matches_python_tokenizers_and_round_trips() {
    for name in ["tiny_tied", "tiny_untied"] {
        let dir = fixture(name);
        let refs = reference(dir.join("reference.safetensors"));
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let ids = tok.encode(TEXT, false).unwrap();
        let want: Vec<u32> = refs["text_ids"].i.iter().map(|&t| t as u32).collect();
        assert_eq!(ids, want, "{name}");
        assert_eq!(tok.decode(&ids, true).unwrap(), TEXT);
    }
    // Llama 3's post-processor adds <|begin_of_text|>.
    let tok = Tokenizer::from_dir(fixture("tiny_tied")).unwrap();
    let bos = tok.token_id("<|begin_of_text|>").unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap()[0], bos);
}

#[test]
fn llama3_chat_template() {
    let messages = [
        Message::new("system", "Be brief."),
        Message::user("Hi there "),
    ];
    let text = ChatTemplate::llama3().apply(&messages, true);
    assert_eq!(
        text,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
         Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n\
         Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n\
         Hi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let plain = ChatTemplate::Llama3 { date: None }.apply(&[Message::user("Hi")], true);
    assert_eq!(
        plain,
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    // Special tokens in the rendered text become single ids.
    let tok = Tokenizer::from_dir(fixture("tiny_tied")).unwrap();
    assert_eq!(tok.chat_template(), Some(ChatTemplate::llama3()));
    let ids = tok.encode(&plain, false).unwrap();
    assert_eq!(ids[0], tok.token_id("<|begin_of_text|>").unwrap());
    assert_eq!(ids[1], tok.token_id("<|start_header_id|>").unwrap());
    assert!(ids.contains(&tok.token_id("<|eot_id|>").unwrap()));
}

#[test]
fn chatml_template() {
    let text = ChatTemplate::smollm2().apply(&[Message::user("Hi")], true);
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system =
        ChatTemplate::smollm2().apply(&[Message::new("system", "S"), Message::user("Hi")], false);
    assert_eq!(
        with_system,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
    let tok = Tokenizer::from_dir(fixture("tiny_untied")).unwrap();
    assert_eq!(tok.chat_template(), Some(ChatTemplate::smollm2()));
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(ids[0], tok.token_id("<|im_start|>").unwrap());
}

#[test]
fn missing_tokenizer_names_the_file() {
    let err = Tokenizer::from_dir(std::env::temp_dir().join("no-such-model-dir")).unwrap_err();
    assert!(err.to_string().contains("no-such-model-dir"), "{err}");
}
