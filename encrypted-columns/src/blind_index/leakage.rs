//! What a blind index column reveals, measured on the stored values themselves.
//!
//! Anyone who can read the table sees which rows share an index value. The report counts
//! that: distinct values, the largest group's share, and the Shannon entropy of the
//! distribution, and warns where the column is too coarse for an index to hide anything.

use std::fmt;

use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Func, Order, Query};
use sea_orm::{ConnectionTrait, DbErr};

/// Distribution statistics of one blind-index column (see [`leakage_report`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LeakageReport {
    /// Table name.
    pub table: String,
    /// Index column name.
    pub column: String,
    /// Rows in the table.
    pub rows: u64,
    /// Rows with a non-NULL index value.
    pub indexed: u64,
    /// Distinct index values.
    pub distinct: u64,
    /// Rows sharing the most common index value.
    pub largest_group: u64,
    /// `largest_group / indexed`.
    pub largest_share: f64,
    /// Shannon entropy of the index values, in bits (log2 of `distinct` when all are equally
    /// common; lower means more guessable).
    pub entropy_bits: f64,
    /// Rows whose index value no other row has.
    pub singletons: u64,
    /// Plain-words warnings; empty when nothing stands out.
    pub warnings: Vec<String>,
}

/// Measures the index column `column` of `table` with two aggregate queries (no values
/// leave the database).
pub async fn leakage_report<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
) -> Result<LeakageReport, DbErr> {
    let t = Alias::new(table);
    let c = Alias::new(column);
    let totals = Query::select()
        .expr_as(Func::count(Expr::col(Asterisk)), Alias::new("n_rows"))
        .expr_as(Func::count(Expr::col(c.clone())), Alias::new("n_indexed"))
        .expr_as(
            Func::count_distinct(Expr::col(c.clone())),
            Alias::new("n_distinct"),
        )
        .from(t.clone())
        .to_owned();
    let row = db.query_one(&totals).await?.ok_or_else(|| {
        DbErr::Custom(format!("{table}.{column}: the count query returned no row"))
    })?;
    let rows = count(row.try_get::<i64>("", "n_rows")?);
    let indexed = count(row.try_get::<i64>("", "n_indexed")?);
    let distinct = count(row.try_get::<i64>("", "n_distinct")?);

    // Histogram of group sizes: how many index values are shared by exactly n rows.
    let groups = Query::select()
        .expr_as(Func::count(Expr::col(Asterisk)), Alias::new("group_size"))
        .from(t)
        .and_where(Expr::col(c.clone()).is_not_null())
        .group_by_col(c)
        .to_owned();
    let histogram = Query::select()
        .column(Alias::new("group_size"))
        .expr_as(Func::count(Expr::col(Asterisk)), Alias::new("n_groups"))
        .from_subquery(groups, Alias::new("g"))
        .group_by_col(Alias::new("group_size"))
        .order_by(Alias::new("group_size"), Order::Desc)
        .to_owned();
    let mut largest_group = 0;
    let mut singletons = 0;
    let mut entropy_bits = 0.0;
    for row in db.query_all(&histogram).await? {
        let size = count(row.try_get::<i64>("", "group_size")?);
        let groups = count(row.try_get::<i64>("", "n_groups")?);
        largest_group = Ord::max(largest_group, size);
        if size == 1 {
            singletons = groups;
        }
        if indexed > 0 {
            let p = size as f64 / indexed as f64;
            entropy_bits -= groups as f64 * p * p.log2();
        }
    }
    let largest_share = if indexed == 0 {
        0.0
    } else {
        largest_group as f64 / indexed as f64
    };
    let mut warnings = Vec::new();
    if indexed > 0 && distinct <= 16 {
        warnings.push(format!(
            "low cardinality: only {distinct} distinct values, so the index sorts rows into a few \
             large groups (like a boolean, sex or blood type); anyone who learns one row's value \
             learns it for its whole group; drop this index or compound it with a \
             high-cardinality field"
        ));
    }
    if indexed > 0 && largest_share >= 0.05 {
        warnings.push(format!(
            "skewed: the most common value covers {:.1}% of indexed rows; frequency analysis \
             can guess it (a common surname, a default value)",
            largest_share * 100.0
        ));
    }
    Ok(LeakageReport {
        table: table.to_owned(),
        column: column.to_owned(),
        rows,
        indexed,
        distinct,
        largest_group,
        largest_share,
        entropy_bits,
        singletons,
        warnings,
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl fmt::Display for LeakageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}.{}: {} rows, {} indexed, {} distinct index values ({:.1} bits of entropy)",
            self.table, self.column, self.rows, self.indexed, self.distinct, self.entropy_bits
        )?;
        write!(
            f,
            "  largest group: {} rows ({:.2}%), rows with a value of their own: {}",
            self.largest_group,
            self.largest_share * 100.0,
            self.singletons
        )?;
        for warning in &self.warnings {
            write!(f, "\n  warning: {warning}")?;
        }
        Ok(())
    }
}
