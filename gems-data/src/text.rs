//! Word splitting shared by BM25, proxy queries, text embeddings and tokenizer training.
//!
//! Lower-cases, splits on every character that is not alphanumeric, and makes every CJK ideograph a
//! word of its own (Chinese has no spaces; single characters are the usual unit for lexical
//! matching of Qilin's notes).

/// Splits `text` into lower-case words.
pub fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for character in text.chars() {
        if is_ideograph(character) {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            words.push(character.to_string());
        } else if character.is_alphanumeric() {
            current.extend(character.to_lowercase());
        } else if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn is_ideograph(character: char) -> bool {
    matches!(character as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F | 0x3040..=0x30FF | 0xAC00..=0xD7AF)
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn splits_on_punctuation_lowercases_and_separates_ideographs() {
        assert_eq!(words("Toy Story (1995)"), vec!["toy", "story", "1995"]);
        assert_eq!(words("user's  RED-wool"), vec!["user", "s", "red", "wool"]);
        assert_eq!(
            words("渔歌子abc主旨"),
            vec!["渔", "歌", "子", "abc", "主", "旨"]
        );
        assert!(words("  ,; ").is_empty());
    }
}
