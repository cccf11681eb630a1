//! Words as a listener hears them, for comparing what a transcriber wrote with the truth: lower
//! case, no punctuation, and numbers, currency and percentages spelled out, so "$1,500" and "one
//! thousand five hundred dollars" are the same words. Whisper writes "300" for "three hundred" on
//! some machines and not on others; both are right.

/// The normalised words of `text`: "We counted 300 birds." → we counted three hundred birds.
pub fn normalise(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '-' | '–' | '—'))
        .flat_map(token_words)
        .collect()
}

/// How many words of `truth` appear in `heard` in the same order (the longest common
/// subsequence): a misheard word costs one, and words in the wrong place do not count.
pub fn in_order(truth: &[String], heard: &[String]) -> usize {
    let mut row = vec![0usize; heard.len() + 1];
    for t in truth {
        let mut diagonal = 0;
        for (j, h) in heard.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if t == h { diagonal + 1 } else { row[j + 1].max(row[j]) };
            diagonal = above;
        }
    }
    row[heard.len()]
}

/// The words one written token stands for.
fn token_words(token: &str) -> Vec<String> {
    let lower = token.to_lowercase();
    // Surrounding punctuation off, but not the signs that are read out with a number.
    let t = lower.trim_matches(|c: char| !(c.is_alphanumeric() || matches!(c, '$' | '£' | '€' | '%')));
    let (currency, rest) = match t.chars().next() {
        Some(c @ ('$' | '£' | '€')) => (Some(c), &t[c.len_utf8()..]),
        _ => (None, t),
    };
    let (rest, percent) = match rest.strip_suffix('%') {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let Some(number) = Number::parse(rest) else {
        // A plain word: "don't" → dont, "U.S." → us.
        let word: String = t.chars().filter(|c| c.is_alphanumeric()).collect();
        return if word.is_empty() { vec![] } else { vec![word] };
    };
    let mut words = number.words();
    if let Some(c) = currency {
        let (one, many, cents) = match c {
            '$' => ("dollar", "dollars", "cents"),
            '£' => ("pound", "pounds", "pence"),
            _ => ("euro", "euros", "cents"),
        };
        // "$5.50" is read "five dollars fifty cents", not "five point five zero dollars".
        words = spell(number.whole);
        words.push(if number.whole == 1 { one } else { many }.into());
        if let Some(fraction) = number.fraction.filter(|f| f.len() == 2 && f != "00") {
            words.extend(spell(fraction.parse().expect("two digits")));
            words.push(cents.into());
        }
    }
    if percent {
        words.push("percent".into());
    }
    words
}

/// A written number: "1,500", "3.5", "21st".
struct Number {
    whole: u64,
    fraction: Option<String>,
    ordinal: bool,
}

impl Number {
    fn parse(s: &str) -> Option<Number> {
        let (s, ordinal) = match ["st", "nd", "rd", "th"].iter().find_map(|suffix| s.strip_suffix(suffix)) {
            Some(digits) => (digits, true),
            None => (s, false),
        };
        let (whole, fraction) = match s.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (s, None),
        };
        // Thousands separators only between groups of three: "1,500", not "1,5".
        let mut groups = whole.split(',');
        let first = groups.next()?;
        let rest: Vec<&str> = groups.collect();
        let digits = |g: &str| !g.is_empty() && g.chars().all(|c| c.is_ascii_digit());
        if !digits(first) || rest.iter().any(|g| g.len() != 3 || !digits(g)) || fraction.is_some_and(|f| !digits(f)) {
            return None;
        }
        let whole = whole.replace(',', "").parse().ok()?;
        Some(Number { whole, fraction: fraction.map(str::to_string), ordinal })
    }

    fn words(&self) -> Vec<String> {
        let mut words = spell(self.whole);
        if let Some(fraction) = &self.fraction {
            words.push("point".into());
            words.extend(fraction.chars().map(|d| ONES[d.to_digit(10).expect("digits") as usize].to_string()));
        }
        if self.ordinal
            && let Some(last) = words.pop()
        {
            words.push(ordinal(&last));
        }
        words
    }
}

const ONES: [&str; 20] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen",
    "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
];
const TENS: [&str; 10] = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"];

/// `n` in words, American style without "and": 1500 → one thousand five hundred.
pub fn spell(n: u64) -> Vec<String> {
    if n == 0 {
        return vec!["zero".into()];
    }
    let mut words = Vec::new();
    let mut rest = n;
    for (scale, name) in [(1_000_000_000_000, "trillion"), (1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand")] {
        if rest >= scale {
            words.extend(below_thousand(rest / scale));
            words.push(name.to_string());
            rest %= scale;
        }
    }
    words.extend(below_thousand(rest));
    words
}

fn below_thousand(n: u64) -> Vec<String> {
    let mut words = Vec::new();
    if n >= 100 {
        words.push(ONES[(n / 100) as usize].to_string());
        words.push("hundred".into());
    }
    match n % 100 {
        0 => {}
        r @ 1..20 => words.push(ONES[r as usize].into()),
        r => {
            words.push(TENS[(r / 10) as usize].into());
            if r % 10 > 0 {
                words.push(ONES[(r % 10) as usize].into());
            }
        }
    }
    words
}

/// "one" → first, "twenty" → twentieth, "hundred" → hundredth.
fn ordinal(word: &str) -> String {
    match word {
        "one" => "first".into(),
        "two" => "second".into(),
        "three" => "third".into(),
        "five" => "fifth".into(),
        "eight" => "eighth".into(),
        "nine" => "ninth".into(),
        "twelve" => "twelfth".into(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    }
}
