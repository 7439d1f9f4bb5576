//! InitProducerId for idempotent producers: hand out a producer id that was never handed out
//! before (reserved durably in blocks), or bump the epoch of an existing one (KIP-360). The
//! partition logs deduplicate and order each producer's batches by sequence number.
//! Transactional ids are refused until transactions are built.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use super::{code, KafkaApis};
use crate::storage::Storage;

impl<S: Storage + Clone> KafkaApis<S> {
    pub(super) fn init_producer_id(
        &self,
        request: InitProducerIdRequest,
        _version: i16,
    ) -> InitProducerIdResponse {
        let response = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        if request.transactional_id.is_some() {
            return response
                .with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed));
        }
        let (id, epoch) = (request.producer_id.0, request.producer_epoch);
        // KIP-360: an idempotent producer that lost track of its sequences asks for a new epoch
        // of its own id. An exhausted epoch gets a fresh id instead.
        if id >= 0 && (0..i16::MAX - 1).contains(&epoch) {
            return response
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch + 1);
        }
        match self.replicas.allocate_producer_id() {
            Ok(id) => response
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(e) => {
                tracing::error!(error = %e.message(), "cannot allocate a producer id");
                response.with_error_code(code(ResponseError::KafkaStorageError))
            }
        }
    }
}
