//! Mapping a source's string keys (RecBole's `:token` fields) to the unified integer ids.
//!
//! RecBole declares user and item ids as `:token`: arbitrary strings (`1m_1`, a movie title, `007`).
//! Tokens are interned as they are read; [`TokenIds::finish`] then numbers them. When every token
//! is the plain decimal spelling of an unsigned integer (`17`, not `017` or `+17`), that integer is
//! the id, so numeric sources keep their ids; otherwise the tokens are numbered 0, 1, 2, ... in the
//! order they were first read, and each keeps its token as its record's `key` (an item's
//! [`crate::schema::Item::key`], a user's [`crate::schema::Request::user_key`]).

use std::collections::HashMap;

/// Tokens in order of first appearance.
#[derive(Debug, Default)]
pub(crate) struct TokenIds {
    positions: HashMap<String, usize>,
    tokens: Vec<String>,
}

impl TokenIds {
    /// The position of `token` (interning it when new).
    pub fn intern(&mut self, token: &str) -> usize {
        if let Some(&position) = self.positions.get(token) {
            return position;
        }
        self.positions.insert(token.to_string(), self.tokens.len());
        self.tokens.push(token.to_string());
        self.tokens.len() - 1
    }

    /// Numbers the tokens (see the module documentation).
    pub fn finish(self) -> NumberedTokens {
        let numeric: Option<Vec<u64>> = self
            .tokens
            .iter()
            .map(|token| {
                token
                    .parse::<u64>()
                    .ok()
                    .filter(|id| id.to_string() == *token)
            })
            .collect();
        match numeric {
            Some(ids) => NumberedTokens { ids, keys: None },
            None => NumberedTokens {
                ids: (0..self.tokens.len() as u64).collect(),
                keys: Some(self.tokens),
            },
        }
    }
}

/// The ids of interned tokens, by position.
#[derive(Debug)]
pub(crate) struct NumberedTokens {
    ids: Vec<u64>,
    /// The tokens, when they were not all integers (and the ids are positions).
    keys: Option<Vec<String>>,
}

impl NumberedTokens {
    /// The id of the token at `position`.
    pub fn id(&self, position: usize) -> u64 {
        self.ids[position]
    }

    /// The token at `position`, when the ids are not the tokens themselves.
    pub fn key(&self, position: usize) -> Option<String> {
        self.keys.as_ref().map(|keys| keys[position].clone())
    }

    /// The token of id `id`, when the ids are not the tokens themselves (ids are positions then).
    pub fn key_of_id(&self, id: u64) -> Option<String> {
        let keys = self.keys.as_ref()?;
        keys.get(usize::try_from(id).ok()?).cloned()
    }

    /// Whether the tokens were numbered by appearance (not all integers).
    pub fn renumbered(&self) -> bool {
        self.keys.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_tokens_keep_their_value_and_others_are_numbered_by_appearance() {
        let mut numeric = TokenIds::default();
        let positions: Vec<usize> = ["40", "7", "40", "18446744073709551615"]
            .iter()
            .map(|token| numeric.intern(token))
            .collect();
        assert_eq!(positions, vec![0, 1, 0, 2]);
        let numbered = numeric.finish();
        assert!(!numbered.renumbered());
        assert_eq!(
            (numbered.id(0), numbered.id(1), numbered.id(2)),
            (40, 7, u64::MAX)
        );
        assert_eq!(numbered.key(0), None);

        // "07" and "7" are different tokens: both integers' spellings would collide.
        let mut mixed = TokenIds::default();
        for token in ["7", "1m_1", "07", "Toy Story", "7"] {
            mixed.intern(token);
        }
        let numbered = mixed.finish();
        assert!(numbered.renumbered());
        assert_eq!(
            (0..4)
                .map(|position| numbered.id(position))
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(numbered.key(2).as_deref(), Some("07"));
        assert_eq!(numbered.key_of_id(3).as_deref(), Some("Toy Story"));
        assert_eq!(numbered.key_of_id(4), None);
    }
}
