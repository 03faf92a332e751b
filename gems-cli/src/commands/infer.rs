//! `gems recommend` and `gems search`: the top items for one user's history (and query).

use clap::Args;
use gems_data::{ItemId, Protocol, Request, Task};

use crate::error::{CliError, Result};
use crate::evaluation::Evaluation;
use crate::saved_run::{RunArgs, SavedRun};

/// Whose history to use.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct HistorySource {
    /// A user of the run's data: their whole time-ordered history.
    #[arg(long)]
    pub user: Option<u64>,
    /// Item ids, oldest first, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub history: Option<Vec<ItemId>>,
}

/// Arguments of `gems recommend`.
#[derive(Args, Debug)]
pub struct RecommendCommand {
    /// The run (and which of its models).
    #[command(flatten)]
    pub run: RunArgs,
    /// The history.
    #[command(flatten)]
    pub history: HistorySource,
    /// How many items to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

/// Arguments of `gems search`.
#[derive(Args, Debug)]
pub struct SearchCommand {
    /// The run (and which of its models).
    #[command(flatten)]
    pub run: RunArgs,
    /// The history.
    #[command(flatten)]
    pub history: HistorySource,
    /// The search query.
    #[arg(long)]
    pub query: String,
    /// How many items to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
}

impl RecommendCommand {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let saved = self.run.open()?;
        let history = resolve_history(&saved, &self.history)?;
        show(&saved, Task::Rec, history, None, self.top)
    }
}

impl SearchCommand {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        if self.query.trim().is_empty() {
            return Err(CliError::Settings("--query is empty".into()));
        }
        let saved = self.run.open()?;
        let history = resolve_history(&saved, &self.history)?;
        show(&saved, Task::Search, history, Some(self.query), self.top)
    }
}

fn resolve_history(saved: &SavedRun, source: &HistorySource) -> Result<Vec<ItemId>> {
    let dataset = &saved.experiment.dataset;
    let history = match (&source.history, source.user) {
        (Some(history), _) => history.clone(),
        (None, Some(user)) => {
            // The user's latest request holds their longest history; its targets come after it.
            let latest = dataset
                .train
                .iter()
                .chain(&dataset.valid)
                .chain(&dataset.test)
                .filter(|r| r.user == user)
                .max_by_key(|r| r.timestamp)
                .ok_or_else(|| {
                    CliError::Settings(format!(
                        "--user {user}: no such user in `{}`",
                        saved.settings.data
                    ))
                })?;
            let mut history = latest.history.clone();
            history.extend(&latest.targets);
            history
        }
        (None, None) => unreachable!("clap requires --user or --history"),
    };
    if let Some(unknown) = history
        .iter()
        .find(|item| !saved.experiment.item_index.contains_key(item))
    {
        return Err(CliError::Settings(format!(
            "--history: item {unknown} is not in the catalogue"
        )));
    }
    Ok(history)
}

fn show(
    saved: &SavedRun,
    task: Task,
    history: Vec<ItemId>,
    query: Option<String>,
    top: usize,
) -> Result<()> {
    if history.is_empty() {
        return Err(CliError::Settings("the history is empty".into()));
    }
    let request = Request {
        user: 0,
        task,
        history,
        query,
        query_is_proxy: false,
        targets: Vec::new(),
        negatives: Vec::new(),
        timestamp: 0,
    };
    let shown = request.history.len().min(saved.settings.max_history);
    println!(
        "history (last {shown} of {} shown to the model):",
        request.history.len()
    );
    for item in &request.history[request.history.len() - shown..] {
        println!("  {item:>6}  {}", saved.experiment.titles[item]);
    }
    if let Some(query) = &request.query {
        println!("query: {query}");
    }
    let evaluation = Evaluation::new(&saved.experiment, top.max(saved.settings.beam_width));
    let ranking = evaluation.rank(
        &saved.model,
        std::slice::from_ref(&request),
        Protocol::FullRanking,
    )?;
    println!("top {top}:");
    for (rank, (item, score)) in ranking[0].iter().take(top).enumerate() {
        println!(
            "  {:>2}. {item:>6}  {:<40}  log-prob {score:.3}",
            rank + 1,
            saved.experiment.titles[item]
        );
    }
    Ok(())
}
