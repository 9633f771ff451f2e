//! Which of a plan's columns a step acts on. A step takes the columns in the phases it
//! works from, leaves alone the columns already past it (so re-running any step after an
//! interruption makes progress), and refuses the whole plan, changing nothing, if any column
//! has not reached it yet.

use sea_orm::{ConnectionTrait, DbErr};

use super::Phase;
use super::plan::EncryptTable;
use super::state;

/// The columns a step acts on, as a plan of their own, with the phase each is in.
pub(crate) struct Stage {
    /// The columns to act on.
    pub plan: EncryptTable,
    /// Their phases, in plan order.
    pub phases: Vec<Phase>,
    /// Columns already past the step, with their phases.
    pub past: Vec<(String, Phase)>,
}

impl Stage {
    /// The `(column, phase)` pairs of the acting columns that are in `phase`.
    pub fn in_phase(&self, phase: Phase) -> Vec<(String, Phase)> {
        self.plan
            .columns
            .iter()
            .zip(&self.phases)
            .filter(|(_, p)| **p == phase)
            .map(|(c, p)| (c.plaintext().to_owned(), *p))
            .collect()
    }
}

/// Splits `plan` for a step moving columns towards `to`: columns in `from` act, columns in
/// `past` are left alone, any other phase refuses the step with the reason.
pub(crate) async fn stage<C: ConnectionTrait>(
    db: &C,
    plan: &EncryptTable,
    from: &[Phase],
    past: &[Phase],
    to: Phase,
) -> Result<Stage, DbErr> {
    plan.check()?;
    state::ensure_tables(db).await?;
    let columns = plan.plaintext_columns();
    let phases = state::phases(db, &plan.table, &columns).await?;
    let mut acting = EncryptTable::new(&plan.table, &plan.primary_key);
    let mut acting_phases = Vec::new();
    let mut done = Vec::new();
    for ((job, column), phase) in plan.columns.iter().zip(&columns).zip(phases) {
        if from.contains(&phase) {
            acting.columns.push(job.clone());
            acting_phases.push(phase);
        } else if past.contains(&phase) {
            done.push(((*column).to_owned(), phase));
        } else {
            return Err(crate::Error::Phase {
                table: plan.table.clone(),
                column: (*column).to_owned(),
                from: phase.as_str(),
                to: to.as_str(),
                problem: phase
                    .check_transition(to)
                    .unwrap_or("the column is not in a phase this step works from"),
            }
            .into());
        }
    }
    Ok(Stage {
        plan: acting,
        phases: acting_phases,
        past: done,
    })
}
