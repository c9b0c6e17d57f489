//! The protocol spoken with one bot: its messages out (`ToBot`) and in (`FromBot`).

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::sink::{Format, ToBot};
use super::twilio::FromBot;
use super::{bandwidth, raw, twilio};

pub enum Wire {
    Twilio(twilio::Writer),
    Bandwidth(bandwidth::Writer, bandwidth::Reader),
    Raw(Box<raw::Wire>),
}

impl Wire {
    pub fn opening(&mut self, custom: &Value) -> Vec<String> {
        match self {
            Wire::Twilio(w) => w.opening(custom),
            Wire::Bandwidth(w, _) => w.opening(custom),
            Wire::Raw(w) => w.opening(custom),
        }
    }

    /// None: the protocol has no such message.
    pub fn message(&mut self, m: &ToBot<'_>) -> Option<Message> {
        match self {
            Wire::Twilio(w) => Some(Message::text(w.message(m))),
            Wire::Bandwidth(w, _) => w.message(m).map(Message::text),
            Wire::Raw(w) => Some(match w.message(m) {
                raw::Frame::Text(t) => Message::text(t),
                raw::Frame::Binary(b) => Message::binary(b),
            }),
        }
    }

    /// A message from the bot. Err: not one of this protocol's (counted, ignored).
    pub fn parse(&mut self, m: &Message) -> Result<FromBot, &'static str> {
        match (self, m) {
            (Wire::Twilio(_), Message::Text(t)) => twilio::parse(t),
            (Wire::Bandwidth(_, r), Message::Text(t)) => r.parse(t),
            (Wire::Raw(w), Message::Text(t)) => w.parse(t),
            (Wire::Raw(w), Message::Binary(b)) => w.audio(b),
            (_, Message::Binary(_)) => Err("a binary frame (this protocol's messages are text)"),
            _ => Ok(FromBot::Other),
        }
    }

    /// What the bot's endpoint carries in the session core.
    pub fn format(&self) -> Format {
        match self {
            Wire::Raw(w) => w.format(),
            Wire::Twilio(_) | Wire::Bandwidth(..) => Format::Mulaw,
        }
    }
}
