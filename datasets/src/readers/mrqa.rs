//! MRQA shared-task format: one context per line with several questions.

use serde_json::Value;

use super::fields::{RecordCtx, kind};
use crate::{Example, Result, Task};

/// The data set name in an MRQA header line `{"header": {"dataset": "SQuAD", ...}}`.
pub(crate) fn header_dataset(value: &Value) -> Option<Option<String>> {
    let header = value.as_object()?.get("header")?;
    Some(
        header
            .get("dataset")
            .and_then(Value::as_str)
            .map(str::to_string),
    )
}

/// One context line -> one example per question, all gold answers kept.
pub(crate) fn context_line(ctx: &RecordCtx<'_>, value: &Value) -> Result<Vec<Example>> {
    let obj = ctx.object(value)?;
    let context = ctx.str_field(obj, "context")?;
    let qas = ctx.field(obj, "qas")?;
    let qas = qas
        .as_array()
        .ok_or_else(|| ctx.bad("qas", format!("expected an array, found {}", kind(qas))))?;
    let mut out = Vec::with_capacity(qas.len());
    for (k, qa) in qas.iter().enumerate() {
        let field = |name: &str| format!("qas[{k}].{name}");
        let qa = qa.as_object().ok_or_else(|| {
            ctx.bad(
                &format!("qas[{k}]"),
                format!("expected an object, found {}", kind(qa)),
            )
        })?;
        let question = match qa.get("question") {
            Some(Value::String(q)) if !q.trim().is_empty() => q.trim().to_string(),
            Some(Value::String(_)) => return Err(ctx.bad(&field("question"), "is empty")),
            Some(v) if !v.is_null() => {
                return Err(ctx.bad(
                    &field("question"),
                    format!("expected a string, found {}", kind(v)),
                ));
            }
            _ => return Err(ctx.missing(&field("question"))),
        };
        let mut answers: Vec<String> = Vec::new();
        let push = |answers: &mut Vec<String>, a: &str| {
            let a = a.trim();
            if !a.is_empty() && !answers.iter().any(|x| x == a) {
                answers.push(a.to_string());
            }
        };
        match qa.get("answers") {
            Some(Value::Array(list)) => {
                for a in list {
                    let a = a.as_str().ok_or_else(|| {
                        ctx.bad(
                            &field("answers"),
                            format!("holds {}, expected strings", kind(a)),
                        )
                    })?;
                    push(&mut answers, a);
                }
            }
            None | Some(Value::Null) => {}
            Some(v) => {
                return Err(ctx.bad(
                    &field("answers"),
                    format!("expected an array, found {}", kind(v)),
                ));
            }
        }
        // Files without `answers` still carry the spans found in the context.
        if answers.is_empty()
            && let Some(Value::Array(detected)) = qa.get("detected_answers")
        {
            for t in detected
                .iter()
                .filter_map(|d| d.get("text").and_then(Value::as_str))
            {
                push(&mut answers, t);
            }
        }
        let Some(target) = answers.first().cloned() else {
            return Err(ctx.missing(&field("answers")));
        };
        let id = match qa.get("qid").or_else(|| qa.get("id")) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => format!("{}-{}-{k}", ctx.source, ctx.index),
        };
        out.push(Example {
            id,
            task: Task::Qa,
            source: ctx.source.to_string(),
            question,
            context: Some(context.to_string()),
            target,
            answers,
            audio: None,
        });
    }
    Ok(out)
}
