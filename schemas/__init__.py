"""The contract between predstream's producer (training side) and consumer (service side).

``avro/*.avsc`` are the event schemas (every version ever published), :mod:`.event` the
validated model, :mod:`.codec` the framings, :mod:`.prompt_id` the prompt identity,
:mod:`.identity` the check that an event's identities match its fields,
:mod:`.transport` topics, key and headers, :mod:`.spoolfile` the spool file format,
:mod:`.settings` the settings both sides share, :mod:`.redaction` passwords out of messages,
:mod:`.prediction_set` curated prediction sets (items, rules, ``set_id``, the export file).
"""

from .codec import (
    CURRENT_VERSION,
    SCHEMA_VERSIONS,
    ConfluentEncoder,
    Decoder,
    Encoder,
    Frame,
    SingleObjectEncoder,
    load_schema,
    make_encoder,
    parse_frame,
    schema_fingerprint,
    single_object_header,
)
from .errors import (
    ConfigError,
    DecodeError,
    FramingError,
    InvalidEventError,
    MalformedBodyError,
    PredictionSetError,
    PredictionSetUnavailableError,
    RegistryUnavailableError,
    SchemaError,
    UnknownSchemaError,
)
from .event import (
    MAX_EVENT_BYTES,
    MAX_JOB_ID_CHARS,
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    ChatMessage,
    GenerationSettings,
    PredictionEvent,
    event_id,
)
from .identity import IDENTITY_MISMATCH, check_identity
from .prediction_set import (
    PredictionSet,
    PredictionSetItem,
    items_from_rows,
    new_prediction_set,
    prediction_set_id,
    read_prediction_set_file,
    write_prediction_set_file,
)
from .prompt_id import PromptIdError, canonical_messages, compute_prompt_id
from .redaction import redact_url
from .settings import StreamSettings, load_settings
from .spoolfile import SPOOL_HEADER, SpoolContents, encode_record, read_spool
from .transport import DEFAULT_TOPIC, Headers, dlq_topic, message_key, parse_kafka_options, redact

__all__ = [
    "CURRENT_VERSION",
    "SCHEMA_VERSIONS",
    "ConfluentEncoder",
    "Decoder",
    "Encoder",
    "Frame",
    "SingleObjectEncoder",
    "load_schema",
    "make_encoder",
    "parse_frame",
    "schema_fingerprint",
    "single_object_header",
    "ConfigError",
    "DecodeError",
    "FramingError",
    "InvalidEventError",
    "MalformedBodyError",
    "PredictionSetError",
    "PredictionSetUnavailableError",
    "RegistryUnavailableError",
    "SchemaError",
    "UnknownSchemaError",
    "MAX_EVENT_BYTES",
    "MAX_JOB_ID_CHARS",
    "MAX_MESSAGES",
    "MAX_TEXT_CHARS",
    "ChatMessage",
    "GenerationSettings",
    "PredictionEvent",
    "event_id",
    "IDENTITY_MISMATCH",
    "check_identity",
    "PredictionSet",
    "PredictionSetItem",
    "items_from_rows",
    "new_prediction_set",
    "prediction_set_id",
    "read_prediction_set_file",
    "write_prediction_set_file",
    "canonical_messages",
    "PromptIdError",
    "compute_prompt_id",
    "redact_url",
    "StreamSettings",
    "load_settings",
    "SPOOL_HEADER",
    "SpoolContents",
    "encode_record",
    "read_spool",
    "DEFAULT_TOPIC",
    "Headers",
    "dlq_topic",
    "message_key",
    "parse_kafka_options",
    "redact",
]
