//! Producer ids on a cluster node (Kafka's RPCProducerIdManager, KIP-730): InitProducerId
//! hands out ids from a block the active controller allocated through the metadata log, and
//! asks for the next block when this one runs out. The log's next id only goes up, so no id
//! is handed out twice across restarts, controller failovers and replaced disks; a broker
//! keeps nothing on its own disk for this, and a block it had not finished when it stopped is
//! simply never used.

use std::time::Duration;

use tokio::sync::Mutex;

use super::controller::{ControllerError, ControllerRequest, ProducerIdBlock};
use super::{ClusterView, CONTROLLER_REQUEST_TIMEOUT_MS};

/// The ids of the current block not yet handed out: `next..end`.
#[derive(Debug, Default)]
pub struct ProducerIds {
    block: Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// A producer id never handed out before anywhere in the cluster, or why there is none
    /// now (no controller, or this start not registered yet): the client retries. Bounded by
    /// [`CONTROLLER_REQUEST_TIMEOUT_MS`]; only one request for a block is in flight at a time.
    pub async fn next(&self, view: &ClusterView) -> Result<i64, ControllerError> {
        let wait = Duration::from_millis(CONTROLLER_REQUEST_TIMEOUT_MS);
        let take = async {
            let mut block = self.block.lock().await;
            if block.0 == block.1 {
                let got = Self::allocate(view).await?;
                *block = (got.first, got.first + got.count);
            }
            let id = block.0;
            block.0 += 1;
            assert!(
                block.0 <= block.1,
                "a producer id is handed out only from its block"
            );
            Ok(id)
        };
        tokio::time::timeout(wait, take)
            .await
            .unwrap_or(Err(ControllerError::NotController))
    }

    async fn allocate(view: &ClusterView) -> Result<ProducerIdBlock, ControllerError> {
        let response = view
            .controller_request(ControllerRequest::AllocateProducerIds {
                node_id: view.me,
                incarnation: view.incarnation,
            })
            .await;
        if response.error != ControllerError::None {
            return Err(response.error);
        }
        // The decoder lets through only non-empty blocks of non-negative ids that end in range.
        response.producer_ids.ok_or_else(|| {
            ControllerError::InvalidRequest("the controller answered without a block".into())
        })
    }
}
