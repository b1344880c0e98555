//! Math word-problem formats: GSM8K, MetaMathQA, SVAMP, MultiArith, instruction style and
//! the two MAWPS layouts.

use serde_json::Value;

use super::fields::{RecordCtx, answer_value, canonical_answer, kind};
use crate::metrics::math::{format_number, parse_number};
use crate::{Example, Result, Task};

fn math_example(
    ctx: &RecordCtx<'_>,
    id: String,
    question: String,
    target: String,
    answer: String,
) -> Example {
    Example {
        id,
        task: Task::Math,
        source: ctx.source.to_string(),
        question,
        context: None,
        target,
        answers: vec![answer],
        audio: None,
    }
}

/// The text after the last `marker`, trimmed (and without a trailing full stop).
fn after_last<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    let pos = text.rfind(marker)?;
    let rest = text[pos + marker.len()..].trim();
    let rest = rest.strip_suffix('.').unwrap_or(rest).trim();
    (!rest.is_empty()).then_some(rest)
}

/// GSM8K `{question, answer}`; the answer is the worked solution ending `#### N`.
pub(crate) fn gsm8k(ctx: &RecordCtx<'_>, value: &Value) -> Result<Example> {
    let obj = ctx.object(value)?;
    let question = ctx.text_field(obj, "question")?;
    let solution = ctx.text_field(obj, "answer")?;
    let answer = after_last(&solution, "####")
        .ok_or_else(|| ctx.bad("answer", "no final answer after `####`"))?;
    let answer = canonical_answer(answer);
    let id = ctx.id_field(obj, "id");
    Ok(math_example(ctx, id, question, solution, answer))
}

/// MetaMathQA `{query, response, type}`; the response ends `The answer is: X`.
pub(crate) fn metamath(ctx: &RecordCtx<'_>, value: &Value) -> Result<Example> {
    let obj = ctx.object(value)?;
    let question = ctx.text_field(obj, "query")?;
    let response = ctx.text_field(obj, "response")?;
    let answer = after_last(&response, "The answer is:")
        .ok_or_else(|| ctx.bad("response", "no final answer after `The answer is:`"))?;
    let answer = canonical_answer(answer);
    let id = ctx.id_field(obj, "id");
    Ok(math_example(ctx, id, question, response, answer))
}

/// SVAMP `{ID, Body, Question, Equation, Answer}`; the problem is `Body` then `Question`.
pub(crate) fn svamp(ctx: &RecordCtx<'_>, value: &Value) -> Result<Example> {
    let obj = ctx.object(value)?;
    let body = ctx.text_field(obj, "Body")?;
    let q = ctx.text_field(obj, "Question")?;
    let answer = ctx.answer_field(obj, "Answer")?;
    let sep = if body.ends_with(['.', '?', '!', ',']) {
        " "
    } else {
        ", "
    };
    let question = format!("{body}{sep}{q}");
    let id = ctx.id_field(obj, "ID");
    Ok(math_example(ctx, id, question, answer.clone(), answer))
}

/// MultiArith `{iIndex, sQuestion, lSolutions}`; every solution is a gold answer.
pub(crate) fn multiarith(ctx: &RecordCtx<'_>, value: &Value) -> Result<Example> {
    let obj = ctx.object(value)?;
    let question = ctx.text_field(obj, "sQuestion")?;
    let sols = ctx.field(obj, "lSolutions")?;
    let sols = sols.as_array().ok_or_else(|| {
        ctx.bad(
            "lSolutions",
            format!("expected an array, found {}", kind(sols)),
        )
    })?;
    let answers = sols
        .iter()
        .map(|v| answer_value(v).ok_or_else(|| ctx.bad("lSolutions", "holds a non-number")))
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = answers.first().cloned() else {
        return Err(ctx.bad("lSolutions", "is empty"));
    };
    let id = ctx.id_field(obj, "iIndex");
    let mut ex = math_example(ctx, id, question, first.clone(), first);
    ex.answers = answers;
    Ok(ex)
}

/// Instruction style `{instruction, input, output, answer}`. The question is the
/// instruction (plus the input when there is one); the target is the worked `output` when
/// present (a leading `A:` is dropped) and otherwise the answer.
pub(crate) fn instruction(ctx: &RecordCtx<'_>, value: &Value) -> Result<Example> {
    let obj = ctx.object(value)?;
    let instr = ctx.text_field(obj, "instruction")?;
    let input = ctx.opt_str(obj, "input")?.map(str::trim).unwrap_or("");
    let question = if input.is_empty() {
        instr
    } else {
        format!("{instr}\n{input}")
    };
    let answer = ctx.answer_field(obj, "answer")?;
    let output = ctx.opt_str(obj, "output")?.map(str::trim).unwrap_or("");
    let output = output
        .strip_prefix("A:")
        .map(str::trim_start)
        .unwrap_or(output);
    let target = if output.is_empty() {
        answer.clone()
    } else {
        output.to_string()
    };
    let id = ctx.id_field(obj, "id");
    Ok(math_example(ctx, id, question, target, answer))
}

/// MAWPS original-text JSON `{id, original_text, equation, ans}`.
pub(crate) fn mawps_json(ctx: &RecordCtx<'_>, value: &Value) -> Result<Example> {
    let obj = ctx.object(value)?;
    let question = match ctx.opt_str(obj, "original_text")? {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => ctx.text_field(obj, "segmented_text")?,
    };
    let answer = ctx.answer_field(obj, "ans")?;
    let id = ctx.id_field(obj, "id");
    Ok(math_example(ctx, id, question, answer.clone(), answer))
}

/// MAWPS cross-validation CSV row `Question,Numbers,Equation,Answer,...`: every `numberK` in
/// the question is replaced with the K-th entry of the space-separated `Numbers` column.
pub(crate) fn mawps_csv(ctx: &RecordCtx<'_>, value: &Value) -> Result<Example> {
    let obj = ctx.object(value)?;
    let template = ctx.text_field(obj, "Question")?;
    let numbers: Vec<&str> = ctx.str_field(obj, "Numbers")?.split_whitespace().collect();
    let question = fill_placeholders(&template, &numbers).map_err(|k| {
        ctx.bad(
            "Numbers",
            format!(
                "has {} numbers but the question uses number{k}",
                numbers.len()
            ),
        )
    })?;
    let answer = ctx.answer_field(obj, "Answer")?;
    Ok(math_example(
        ctx,
        ctx.fallback_id(),
        question,
        answer.clone(),
        answer,
    ))
}

/// Replaces `numberK` (K = digits) with `numbers[K]`, written canonically (`8.0` -> `8`).
/// Errors with K when a placeholder has no number.
pub(crate) fn fill_placeholders(
    template: &str,
    numbers: &[&str],
) -> std::result::Result<String, usize> {
    const KEY: &str = "number";
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find(KEY) {
        let after = &rest[pos + KEY.len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        // Only a whole word `numberK`: not preceded by a letter (e.g. "renumber0").
        let preceded_by_letter = rest[..pos]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric);
        if digits == 0 || preceded_by_letter {
            out.push_str(&rest[..pos + KEY.len()]);
            rest = after;
            continue;
        }
        let k: usize = after[..digits].parse().map_err(|_| usize::MAX)?;
        let raw = numbers.get(k).ok_or(k)?;
        out.push_str(&rest[..pos]);
        match parse_number(raw) {
            Some(x) => out.push_str(&format_number(x)),
            None => out.push_str(raw),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let q = fill_placeholders(
            "a number0 b number1 c number10 numbers",
            &[
                "8.0", "2.5", "0", "0", "0", "0", "0", "0", "0", "0", "1000.0",
            ],
        );
        assert_eq!(q.as_deref(), Ok("a 8 b 2.5 c 1000 numbers"));
        assert_eq!(fill_placeholders("x number2", &["1"]), Err(2));
    }

    #[test]
    fn after_marker() {
        assert_eq!(after_last("so 3\n#### 1,000", "####"), Some("1,000"));
        assert_eq!(after_last("The answer is: 5.", "The answer is:"), Some("5"));
        assert_eq!(after_last("no marker", "####"), None);
    }
}
