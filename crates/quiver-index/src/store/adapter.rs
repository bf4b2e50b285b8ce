//! The stored query adapter ([`crate::adapter::QueryAdapter`]): one row of the `adapters` table.

use super::schema::ADAPTERS_TABLE;
use super::Store;
use crate::adapter::QueryAdapter;
use crate::error::{IndexError, Result};
use rusqlite::OptionalExtension;

const QUERY_ADAPTER: &str = "query";

impl Store {
    /// The index's query adapter; `None` when it has none (also an index older than the table).
    pub fn query_adapter(&self) -> Result<Option<QueryAdapter>> {
        if !self.has_table("adapters")? {
            return Ok(None);
        }
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT value FROM adapters WHERE name = ?1",
                [QUERY_ADAPTER],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_error(e))?;
        bytes
            .map(|bytes| {
                QueryAdapter::from_bytes(&bytes).ok_or_else(|| IndexError::BadMetadata {
                    field: "adapters.query",
                    value: format!("{} bytes that are not a query adapter", bytes.len()),
                })
            })
            .transpose()
    }

    /// Stores the query adapter, or removes it (`None`).
    pub fn set_query_adapter(&self, adapter: Option<&QueryAdapter>) -> Result<()> {
        let run = || -> rusqlite::Result<()> {
            self.conn.execute_batch(ADAPTERS_TABLE)?;
            match adapter {
                Some(adapter) => self.conn.execute(
                    "INSERT INTO adapters(name, value) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    rusqlite::params![QUERY_ADAPTER, adapter.to_bytes()],
                ),
                None => self
                    .conn
                    .execute("DELETE FROM adapters WHERE name = ?1", [QUERY_ADAPTER]),
            }
            .map(|_| ())
        };
        run().map_err(|e| self.db_error(e))
    }
}
