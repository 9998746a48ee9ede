"""What a chat does, front-end neutral: the conversation, writing a reply again, the settings
commands, recovery after a restart, model switching and the command table, composed by
`ChatService`."""

from bot.chat.conversation import Accepted, ReplyOutcome
from bot.chat.recovery import RecoveryItem
from bot.chat.service import ChatService
from bot.chat.sink import MessageRecorder, ReplySink

__all__ = ["Accepted", "ChatService", "MessageRecorder", "RecoveryItem", "ReplyOutcome", "ReplySink"]
