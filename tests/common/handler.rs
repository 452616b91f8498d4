//! A recording fake [`Handler`] for testing the server alone: it reports what it received
//! on a channel and answers as its [`Behaviour`] says.

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use petrel::codec::{Command, Data, Payload, Timestamp};
use petrel::executor::api::{
    CHANNEL_DEPTH, ExecRequest, Handler, InputChunk, OutputFrame, OutputReceiver,
};
use petrel::name::Name;

/// How long a test waits for an event (a safety net, not a measurement).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the fake handler does with a request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Reads the whole input (if any), then answers `success string "received <n>
    /// octets"` (or `failure "input failed"` if the input failed).
    Echo,
    /// Drops the input at once and answers `failure "refused early"`.
    RefuseEarly,
    /// Answers `success string "subscribed"`, then a console data frame every 20 ms until
    /// nobody reads.
    Subscribe,
    /// Sends these payloads, then closes.
    Frames(Vec<Payload>),
}

/// What the fake handler saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request arrived.
    Request {
        /// Its name.
        name: String,
        /// Its command.
        command: Box<Command>,
        /// Whether it came with an input stream.
        input: bool,
        /// The peer.
        peer: String,
    },
    /// An input chunk, in order.
    Input(InputChunk),
    /// The input channel closed without `End` or `Failed`.
    InputClosed,
    /// Sending an output frame failed: the server dropped the receiver.
    OutputClosed,
}

/// The fake handler.
pub struct FakeHandler {
    behaviour: Behaviour,
    events: Mutex<mpsc::Sender<Event>>,
}

impl FakeHandler {
    /// A handler with `behaviour` and the receiver of its events.
    pub fn new(behaviour: Behaviour) -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        (
            Self {
                behaviour,
                events: Mutex::new(tx),
            },
            rx,
        )
    }
}

impl Handler for FakeHandler {
    fn handle(&self, request: ExecRequest) -> OutputReceiver {
        let events = self.events.lock().unwrap().clone();
        let req = request.request.get();
        let name = req.name.clone();
        let _ = events.send(Event::Request {
            name: name.text(),
            command: Box::new(req.command.clone()),
            input: request.input.is_some(),
            peer: request.peer.clone(),
        });
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_DEPTH);
        let behaviour = self.behaviour.clone();
        let mut input = request.input;
        tokio::spawn(async move {
            let reply = |payload| OutputFrame {
                name: name.clone(),
                payload,
            };
            match behaviour {
                Behaviour::Echo => {
                    let mut total = 0;
                    let mut failed = false;
                    if let Some(input) = input.as_mut() {
                        loop {
                            match input.recv().await {
                                Some(chunk) => {
                                    let end = !matches!(chunk, InputChunk::Data(_));
                                    if let InputChunk::Data(d) = &chunk {
                                        total += d.len();
                                    }
                                    failed |= matches!(chunk, InputChunk::Failed(_));
                                    let _ = events.send(Event::Input(chunk));
                                    if end {
                                        break;
                                    }
                                }
                                None => {
                                    let _ = events.send(Event::InputClosed);
                                    failed = true;
                                    break;
                                }
                            }
                        }
                    }
                    let payload = if failed {
                        Payload::failure("input failed")
                    } else {
                        Payload::success_string(format!("received {total} octets"))
                    };
                    if tx.send(reply(payload)).await.is_err() {
                        let _ = events.send(Event::OutputClosed);
                    }
                }
                Behaviour::RefuseEarly => {
                    drop(input.take());
                    if tx
                        .send(reply(Payload::failure("refused early")))
                        .await
                        .is_err()
                    {
                        let _ = events.send(Event::OutputClosed);
                    }
                }
                Behaviour::Subscribe => {
                    let mut payload = Payload::success_string("subscribed");
                    let mut n = 0;
                    loop {
                        if tx.send(reply(payload)).await.is_err() {
                            let _ = events.send(Event::OutputClosed);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        n += 1;
                        payload = Payload::Data(Data::Console {
                            timestamp: Timestamp::from_unix_seconds(1_748_779_200).unwrap(),
                            line: format!("line {n}"),
                        });
                    }
                }
                Behaviour::Frames(payloads) => {
                    for payload in payloads {
                        if tx.send(reply(payload)).await.is_err() {
                            let _ = events.send(Event::OutputClosed);
                            break;
                        }
                    }
                }
            }
        });
        rx
    }
}

/// The name `s` (test shorthand).
pub fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}
