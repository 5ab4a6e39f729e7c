# Schemathesis hooks of the conformance run (loaded by schemathesis.toml).
#
# KnownRefusals narrows the few exceptions of positive_data_acceptance to the
# error they are for. The config lets, say, submitExecution answer 400 to a
# schema-valid request because a node filter may not compile, which JSON
# Schema cannot say; a status alone would also let through a 400 `bad_json`
# caused by a document that is looser than the server (a `required` entry
# missing, for one). This check fails such an answer unless its `error` code
# is the one listed for that operation and status.

import schemathesis


@schemathesis.check
class KnownRefusals:
    """A schema-valid request refused with a status listed as an exception
    must carry the error code listed with it (`[checks.KnownRefusals]`)."""

    def __init__(self, refusals=()):
        # (operationId, status) -> (error code, message fragment or "")
        self.allowed = {}
        for entry in refusals:
            key = (entry["operation"], int(entry["status"]))
            self.allowed[key] = (entry["error"], entry.get("message", ""))

    def after_response(self, ctx, response, case):
        meta = case.meta
        if meta is None or not meta.generation.mode.is_positive:
            return None
        operation_id = case.operation.definition.raw.get("operationId")
        listed = self.allowed.get((operation_id, response.status_code))
        if listed is None:
            # Not an exception: positive_data_acceptance judges the status.
            return None
        error, fragment = listed
        try:
            body = response.json()
        except ValueError:
            body = None
        code = body.get("error") if isinstance(body, dict) else None
        message = body.get("message", "") if isinstance(body, dict) else ""
        if code != error or fragment not in message:
            raise AssertionError(
                f"{operation_id} refused a schema-valid request with {response.status_code} "
                f"`{code}` ({message!r}); the only known exception for that status is `{error}`"
                + (f" with a message containing {fragment!r}" if fragment else "")
                + ": the document allows what the server refuses"
            )
        return None
