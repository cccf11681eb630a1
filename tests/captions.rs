//! Captions as a viewer reads them, and the helpers that compare them with what was said.

mod common;

use common::subtitles::srt_cues;
use common::words::{in_order, normalise, spell};

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[test]
fn normalised_words_spell_out_numbers_currency_and_percentages() {
    for (written, spoken) in [
        ("We counted 300 birds.", "we counted three hundred birds"),
        ("It costs $5!", "it costs five dollars"),
        ("$1 each", "one dollar each"),
        ("Sales grew 30%.", "sales grew thirty percent"),
        ("$1,500", "one thousand five hundred dollars"),
        ("$5.50", "five dollars fifty cents"),
        ("1,000,001 and 999,999", "one million one and nine hundred ninety nine thousand nine hundred ninety nine"),
        ("3.14", "three point one four"),
        ("the 21st and 2nd", "the twenty first and second"),
        ("twenty-one, U.S. don't", "twenty one us dont"),
        ("0 — 10", "zero ten"),
        ("1,5 x", "15 x"),
    ] {
        assert_eq!(normalise(written), words(spoken), "{written}");
    }
    assert_eq!(spell(40_012), words("forty thousand twelve"));
}

#[test]
fn words_in_order_count_a_slip_once_and_ignore_words_out_of_place() {
    let truth = words("we counted three hundred birds");
    assert_eq!(in_order(&truth, &words("we counted three hundred words")), 4);
    assert_eq!(in_order(&truth, &words("birds hundred three counted we")), 1);
    assert_eq!(in_order(&truth, &words("well we counted about three hundred birds today")), 5);
    assert_eq!(in_order(&truth, &[]), 0);
}

#[test]
fn srt_cues_read_back_with_times_and_lines() {
    let cues = srt_cues("1\n00:00:01,000 --> 00:00:02,250\nhello\nworld\n\n2\n01:00:00,000 --> 01:00:00,500\n$1,500\n\n");
    assert_eq!(cues.len(), 2);
    assert_eq!((cues[0].start, cues[0].end, cues[0].text.as_str()), (1.0, 2.25, "hello\nworld"));
    assert_eq!((cues[1].start, cues[1].text.as_str()), (3600.0, "$1,500"));
}
