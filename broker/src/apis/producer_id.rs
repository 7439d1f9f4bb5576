//! InitProducerId for idempotent producers: hand out a producer id that was never handed out
//! before, or bump the epoch of an existing one (KIP-360). A single broker reserves ids
//! durably in blocks on its own disk; a cluster node takes them from blocks the controller
//! allocates through the metadata log (`cluster::producer_ids`), and answers
//! COORDINATOR_LOAD_IN_PROGRESS, which clients retry, while it cannot get one. The partition
//! logs deduplicate and order each producer's batches by sequence number. Transactional ids
//! are refused until transactions are built.

use std::sync::Arc;

use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind,
};
use kafka_protocol::ResponseError;

use super::{code, KafkaApis, Reply};
use crate::storage::Storage;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn init_producer_id(&self, request: InitProducerIdRequest, _version: i16) -> Reply {
        let response = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let now = |r| Reply::Now(ResponseKind::InitProducerId(r));
        if request.transactional_id.is_some() {
            return now(
                response.with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed))
            );
        }
        let (id, epoch) = (request.producer_id.0, request.producer_epoch);
        // KIP-360: an idempotent producer that lost track of its sequences asks for a new epoch
        // of its own id. An exhausted epoch gets a fresh id instead.
        if id >= 0 && (0..i16::MAX - 1).contains(&epoch) {
            return now(response
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch + 1));
        }
        let Some(view) = self.cluster.as_ref().map(Arc::clone) else {
            return now(match self.replicas.allocate_producer_id() {
                Ok(id) => response
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(0),
                Err(e) => {
                    tracing::error!(error = %e.message(), "cannot allocate a producer id");
                    response.with_error_code(code(ResponseError::KafkaStorageError))
                }
            });
        };
        Reply::Later(Box::pin(async move {
            ResponseKind::InitProducerId(match view.producer_ids.next(&view).await {
                Ok(id) => response
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(0),
                Err(e) => {
                    tracing::debug!(error = ?e, "no producer id block from the controller yet");
                    response.with_error_code(code(ResponseError::CoordinatorLoadInProgress))
                }
            })
        }))
    }
}
