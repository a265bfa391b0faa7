//! Building a source's connector from its config section.

use std::sync::Arc;

use escr_connector::{Connector, ConnectorError, ConnectorSettings};

/// The connector for a source's config section. Connectors connect lazily; one that
/// cannot even be built (a secret file missing, say) stands in as a source that is down
/// with that reason, so the gateway still starts and the other sources serve.
pub fn connect(name: &str, settings: &dyn ConnectorSettings) -> Arc<dyn Connector> {
    settings.connect().unwrap_or_else(|error| {
        tracing::warn!(source = name, error = %error, "source connector not available");
        Arc::new(Unavailable(error))
    })
}

/// A source whose connector could not be built: every call reports why.
struct Unavailable(ConnectorError);

#[async_trait::async_trait]
impl Connector for Unavailable {
    fn engine(&self) -> &'static str {
        "unavailable"
    }
    fn capabilities(&self) -> escr_connector::Capabilities {
        escr_connector::Capabilities {
            max_batch: 1000,
            placeholder: escr_connector::Placeholder::Question,
        }
    }
    async fn query(
        &self,
        _sql: &str,
        _params: &[escr_connector::Value],
    ) -> Result<escr_connector::RowSet, ConnectorError> {
        Err(self.0.clone())
    }
    async fn ping(&self) -> Result<(), ConnectorError> {
        Err(self.0.clone())
    }
    fn statements_executed(&self) -> u64 {
        0
    }
}
