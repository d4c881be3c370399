//! RabbitMQ backend (lapin). Placeholder until branch `amqp` merges.
use super::*;
pub struct AmqpConfig;
impl AmqpConfig {
    pub fn new(_url: String, _prefix: String) -> Self {
        AmqpConfig
    }
}
pub struct AmqpQueue;
impl AmqpQueue {
    pub fn start(_c: AmqpConfig) -> Self {
        AmqpQueue
    }
}
#[async_trait]
impl Queue for AmqpQueue {
    async fn publish(&self, _u: Urgency, _m: Vec<Vec<u8>>) -> Result<(), QueueError> {
        unimplemented!()
    }
    async fn consume(&self, _u: Urgency, _p: u16) -> Result<Box<dyn Consumer>, QueueError> {
        unimplemented!()
    }
    fn name(&self) -> &'static str {
        "rabbitmq"
    }
}
impl AmqpQueue {
    pub async fn wait_connected(&self, _t: std::time::Duration) -> Result<(), QueueError> {
        unimplemented!()
    }
}
