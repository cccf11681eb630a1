"""schemathesis hooks of tests/api_fuzz.rs: a tus PATCH body (application/offset+octet-stream)
is bytes, sent as they are."""

import schemathesis
from schemathesis.transport.requests import binary_serializer

schemathesis.serializer("application/offset+octet-stream")(binary_serializer)
