//! [`PrefixTrie`]: the token sequences of an allowed item set (the whole catalogue or one
//! request's candidates), so that decoding can only emit valid items.

use crate::error::ModelError;

/// Index of a node in a [`PrefixTrie`].
pub type NodeId = usize;

#[derive(Debug, Clone, Default)]
struct Node {
    /// `(token, child)`, sorted by token.
    children: Vec<(u32, NodeId)>,
    /// Items whose sequence ends here.
    items: Vec<usize>,
}

/// A trie over token sequences; each complete sequence maps to the item index it was inserted with.
#[derive(Debug, Clone)]
pub struct PrefixTrie {
    nodes: Vec<Node>,
    items: usize,
}

impl Default for PrefixTrie {
    fn default() -> Self {
        Self::new()
    }
}

impl PrefixTrie {
    /// The root node.
    pub const ROOT: NodeId = 0;

    /// An empty trie.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
            items: 0,
        }
    }

    /// A trie where item `i` is `sequences[i]`.
    pub fn from_sequences<S: AsRef<[u32]>>(
        sequences: impl IntoIterator<Item = S>,
    ) -> Result<Self, ModelError> {
        let mut trie = Self::new();
        for (item, sequence) in sequences.into_iter().enumerate() {
            trie.insert(sequence.as_ref(), item)?;
        }
        Ok(trie)
    }

    /// Adds `item` with token sequence `tokens` (non-empty). Items sharing a sequence share a leaf.
    pub fn insert(&mut self, tokens: &[u32], item: usize) -> Result<(), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::InvalidInput(format!(
                "item {item} has an empty token sequence"
            )));
        }
        let mut node = Self::ROOT;
        for &token in tokens {
            node = match self.nodes[node]
                .children
                .binary_search_by_key(&token, |&(t, _)| t)
            {
                Ok(position) => self.nodes[node].children[position].1,
                Err(position) => {
                    let child = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].children.insert(position, (token, child));
                    child
                }
            };
        }
        self.nodes[node].items.push(item);
        self.items += 1;
        Ok(())
    }

    /// The allowed next tokens after reaching `node`, with the nodes they lead to, sorted by token.
    pub fn children(&self, node: NodeId) -> &[(u32, NodeId)] {
        &self.nodes[node].children
    }

    /// The node reached from `node` by `token`, if allowed.
    pub fn child(&self, node: NodeId, token: u32) -> Option<NodeId> {
        let children = &self.nodes[node].children;
        children
            .binary_search_by_key(&token, |&(t, _)| t)
            .ok()
            .map(|i| children[i].1)
    }

    /// Items whose sequence ends at `node`.
    pub fn items_at(&self, node: NodeId) -> &[usize] {
        &self.nodes[node].items
    }

    /// The node reached by `tokens` from the root, if they are a prefix of some item.
    pub fn walk(&self, tokens: &[u32]) -> Option<NodeId> {
        tokens
            .iter()
            .try_fold(Self::ROOT, |node, &token| self.child(node, token))
    }

    /// Number of items inserted.
    pub fn len(&self) -> usize {
        self.items
    }

    /// Whether no item was inserted.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Every `(sequence, item)` in the trie, in depth-first token order.
    pub fn sequences(&self) -> Vec<(Vec<u32>, usize)> {
        let mut out = Vec::with_capacity(self.items);
        let mut stack = vec![(Self::ROOT, Vec::new())];
        while let Some((node, prefix)) = stack.pop() {
            out.extend(
                self.nodes[node]
                    .items
                    .iter()
                    .map(|&item| (prefix.clone(), item)),
            );
            for &(token, child) in self.nodes[node].children.iter().rev() {
                let mut sequence = prefix.clone();
                sequence.push(token);
                stack.push((child, sequence));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::PrefixTrie;

    #[test]
    fn walks_shared_prefixes_and_reports_leaves() {
        let trie =
            PrefixTrie::from_sequences([vec![5, 7, 1], vec![5, 8, 1], vec![6, 1], vec![5, 7]])
                .unwrap();
        assert_eq!(trie.len(), 4);
        let tokens: Vec<u32> = trie
            .children(PrefixTrie::ROOT)
            .iter()
            .map(|&(t, _)| t)
            .collect();
        assert_eq!(tokens, vec![5, 6]);
        let node = trie.walk(&[5, 7]).unwrap();
        assert_eq!(trie.items_at(node), &[3]);
        assert_eq!(trie.items_at(trie.walk(&[5, 7, 1]).unwrap()), &[0]);
        assert!(trie.walk(&[7]).is_none());
        let mut sequences = trie.sequences();
        sequences.sort_by_key(|&(_, item)| item);
        assert_eq!(sequences[1], (vec![5, 8, 1], 1));
        assert!(PrefixTrie::from_sequences([Vec::<u32>::new()]).is_err());
    }
}
