//! Prompts per task, with configurable templates.
//!
//! The default wording is the reference's:
//! - rec: `Below is the user's interaction history: {history}. Please recommend the next item the
//!   user is likely to click.`
//! - search: `Below is the user's interaction history: {history}. The user's search query is:
//!   {query}. Please predict the next item the user might click.`
//!
//! `{history}` becomes the identifiers of the last N history items (oldest first) separated by
//! spaces; `{query}` becomes the request's query.

use serde::{Deserialize, Serialize};

use crate::convert::MAX_HISTORY_LIMIT;
use crate::error::{DataError, Result};
use crate::item_ids::ItemIdentifiers;
use crate::schema::{Request, Task};

/// The reference's recommendation prompt.
pub const REFERENCE_REC_TEMPLATE: &str = "Below is the user's interaction history: {history}. Please recommend the next item the user is likely to click.";

/// The reference's search prompt.
pub const REFERENCE_SEARCH_TEMPLATE: &str = "Below is the user's interaction history: {history}. The user's search query is: {query}. Please predict the next item the user might click.";

/// History items rendered by default (the most recent ones).
pub const DEFAULT_MAX_HISTORY_ITEMS: usize = 20;

const HISTORY: &str = "{history}";
const QUERY: &str = "{query}";

/// Prompt templates of both tasks and the history length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTemplates {
    rec: String,
    search: String,
    max_history_items: usize,
}

impl Default for PromptTemplates {
    fn default() -> Self {
        PromptTemplates {
            rec: REFERENCE_REC_TEMPLATE.to_string(),
            search: REFERENCE_SEARCH_TEMPLATE.to_string(),
            max_history_items: DEFAULT_MAX_HISTORY_ITEMS,
        }
    }
}

impl PromptTemplates {
    /// Custom templates. The rec template must contain `{history}` and not `{query}`; the search
    /// template must contain both; no other `{...}` placeholder is allowed. At most
    /// [`MAX_HISTORY_LIMIT`] history items can be shown.
    pub fn new(rec: &str, search: &str, max_history_items: usize) -> Result<Self> {
        if max_history_items > MAX_HISTORY_LIMIT {
            return Err(DataError::InvalidOption(format!(
                "max_history {max_history_items} is out of range: a prompt shows 0 to {MAX_HISTORY_LIMIT} history items (the reference shows 20)"
            )));
        }
        check_template("rec", rec, false)?;
        check_template("search", search, true)?;
        Ok(PromptTemplates {
            rec: rec.to_string(),
            search: search.to_string(),
            max_history_items,
        })
    }

    /// The template of `task`.
    pub fn template(&self, task: Task) -> &str {
        match task {
            Task::Rec => &self.rec,
            Task::Search => &self.search,
        }
    }

    /// How many of the most recent history items a prompt shows.
    pub fn max_history_items(&self) -> usize {
        self.max_history_items
    }

    /// Renders the prompt of `request` with at most [`Self::max_history_items`] history items.
    pub fn render(&self, request: &Request, identifiers: &ItemIdentifiers) -> Result<String> {
        self.render_with_history(request, identifiers, self.max_history_items)
    }

    /// Renders the prompt with at most `history_items` of the most recent history items (used by
    /// batching to shorten prompts that exceed the token budget).
    pub fn render_with_history(
        &self,
        request: &Request,
        identifiers: &ItemIdentifiers,
        history_items: usize,
    ) -> Result<String> {
        let start = request
            .history
            .len()
            .saturating_sub(history_items.min(self.max_history_items));
        let mut history = String::new();
        for item in &request.history[start..] {
            let identifier = identifiers.identifier(*item).ok_or_else(|| {
                DataError::InvalidOption(format!(
                    "history item {item} of user {} has no identifier; build the identifiers from the same catalogue as the requests",
                    request.user
                ))
            })?;
            if !history.is_empty() {
                history.push(' ');
            }
            history.push_str(identifier);
        }
        let query = match request.task {
            Task::Search => request.query.as_deref().ok_or_else(|| {
                DataError::InvalidOption(format!(
                    "a search request of user {} has no query; validate the data first",
                    request.user
                ))
            })?,
            Task::Rec => "",
        };
        Ok(substitute(self.template(request.task), &history, query))
    }
}

/// Replaces the placeholders in one left-to-right pass (a query containing `{history}` stays
/// literal).
fn substitute(template: &str, history: &str, query: &str) -> String {
    let mut output = String::with_capacity(template.len() + history.len() + query.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        output.push_str(&rest[..open]);
        let tail = &rest[open..];
        if let Some(after) = tail.strip_prefix(HISTORY) {
            output.push_str(history);
            rest = after;
        } else if let Some(after) = tail.strip_prefix(QUERY) {
            output.push_str(query);
            rest = after;
        } else {
            output.push('{');
            rest = &tail[1..];
        }
    }
    output.push_str(rest);
    output
}

fn check_template(task: &str, template: &str, wants_query: bool) -> Result<()> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let tail = &rest[open..];
        if let Some(close) = tail.find('}') {
            let placeholder = &tail[..=close];
            let is_word = placeholder[1..placeholder.len() - 1]
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_');
            if is_word && placeholder != HISTORY && placeholder != QUERY {
                return Err(DataError::InvalidOption(format!(
                    "{task} prompt template: unknown placeholder {placeholder}; the known placeholders are {HISTORY} and {QUERY}"
                )));
            }
        }
        rest = &tail[1..];
    }
    if !template.contains(HISTORY) {
        return Err(DataError::InvalidOption(format!(
            "{task} prompt template must contain {HISTORY}"
        )));
    }
    if wants_query && !template.contains(QUERY) {
        return Err(DataError::InvalidOption(format!(
            "{task} prompt template must contain {QUERY}"
        )));
    }
    if !wants_query && template.contains(QUERY) {
        return Err(DataError::InvalidOption(format!(
            "{task} prompt template must not contain {QUERY}: recommendation requests have no query"
        )));
    }
    Ok(())
}
