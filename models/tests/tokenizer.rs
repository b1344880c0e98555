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
    let text = ChatTemplate::llama3().apply(&messages, true).unwrap();
    assert_eq!(
        text,
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n\
         Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n\
         Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n\
         Hi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    let plain = ChatTemplate::Llama3 { date: None }
        .apply(&[Message::user("Hi")], true)
        .unwrap();
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
    let text = ChatTemplate::smollm2()
        .apply(&[Message::user("Hi")], true)
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system = ChatTemplate::smollm2()
        .apply(&[Message::new("system", "S"), Message::user("Hi")], false)
        .unwrap();
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

/// The real templates shipped with Llama 3 (`tokenizer_config.json`) and SmolLM2-135M-Instruct
/// (GGUF metadata) render exactly as transformers' `apply_chat_template` renders them
/// (`tools/chat_template_reference.py`, transformers 4.57.6).
#[test]
fn jinja_chat_templates_match_transformers() {
    let path = fixture("chat_templates.json");
    let path = path.canonicalize().unwrap_or(path);
    let refs: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut checked = 0;
    for t in refs.as_array().unwrap() {
        let template = models::llama::JinjaChat::new(
            t["source"].as_str().unwrap(),
            t["bos_token"].as_str().unwrap(),
            t["eos_token"].as_str().unwrap(),
            &path,
        )
        .unwrap();
        let chat = ChatTemplate::Jinja(template);
        for case in t["cases"].as_array().unwrap() {
            let messages: Vec<Message> = case["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
                .collect();
            let generation = case["add_generation_prompt"].as_bool().unwrap();
            let got = chat.apply(&messages, generation).unwrap();
            assert_eq!(got, case["text"].as_str().unwrap(), "{} {case}", t["name"]);
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
    // The built-in fallbacks render these real templates' text too (the form used when a
    // tokenizer ships no template).
    let smol = &refs[1]["cases"][0];
    assert_eq!(
        ChatTemplate::smollm2()
            .apply(&[Message::user("What is 2 + 3?")], true)
            .unwrap(),
        smol["text"].as_str().unwrap()
    );
    let llama = &refs[0]["cases"][0];
    assert_eq!(
        ChatTemplate::Llama3 { date: None }
            .apply(&[Message::user("What is 2 + 3?")], true)
            .unwrap(),
        llama["text"].as_str().unwrap()
    );
}

#[test]
fn a_tokenizer_config_chat_template_is_used_and_bad_ones_are_errors() {
    let dir = std::env::temp_dir().join(format!("flexi-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("tiny_tied").join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let refs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("chat_templates.json")).unwrap()).unwrap();
    let config = serde_json::json!({
        "bos_token": "<|begin_of_text|>",
        "eos_token": {"content": "<|eot_id|>"},
        "chat_template": [{"name": "default", "template": refs[0]["source"]}],
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let chat = tok.chat_template().unwrap();
    assert!(matches!(chat, ChatTemplate::Jinja(_)));
    assert_eq!(chat.stop_tokens(), vec!["<|eot_id|>".to_string()]);
    assert_eq!(
        chat.apply(&[Message::user("What is 2 + 3?")], true)
            .unwrap(),
        refs[0]["cases"][0]["text"].as_str().unwrap()
    );
    // raise_exception is an error naming the template's message, not a panic.
    let strict = models::llama::JinjaChat::new(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok",
        "",
        "",
        &dir,
    )
    .unwrap();
    let err = ChatTemplate::Jinja(strict)
        .apply(&[Message::new("system", "S")], true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("first message must be from the user"), "{err}");
    // A template that does not parse names the file.
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"chat_template": "{% for m in messages %}"}"#,
    )
    .unwrap();
    let err = Tokenizer::from_dir(&dir).unwrap_err().to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("chat template"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
