# Checks docs/openapi.yaml for what a fuzzer cannot: every example (request
# bodies and responses) is valid against the schema it illustrates, formats
# included, so that the shapes generators and fuzzers start from are real
# ones; every successful answer has an example; and every operation that takes
# a body lists 400 (`bad_json`) and 413 (`body_too_large`), which protocol.md
# §1 says any body can get.
#
# Usage: python check_examples.py docs/openapi.yaml  (exits 1 naming each bad example)

import sys

import jsonschema_rs
import yaml


def resolve(document, node):
    """Follows a local `$ref` (to a response or an example) to what it names."""
    while isinstance(node, dict) and set(node) == {"$ref"}:
        target = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def main(path):
    with open(path, encoding="utf-8") as f:
        document = yaml.safe_load(f)
    checked, bad = 0, []
    for route, item in document["paths"].items():
        for method, operation in item.items():
            media = []
            body = operation.get("requestBody")
            if body:
                media += [("request", m) for m in body["content"].values()]
                for status in ("400", "413"):
                    if status not in operation["responses"]:
                        bad.append(f"{method.upper()} {route}: takes a body but does not list {status}")
            for status, response in operation["responses"].items():
                media += [(status, m) for m in resolve(document, response).get("content", {}).values()]
            for where, medium in media:
                examples = medium.get("examples", {})
                if where != "request" and not examples and where.startswith("2"):
                    bad.append(f"{method.upper()} {route} {where}: no example")
                # The schema is checked with the document's components beside
                # it, so that its `$ref`s resolve as they do in the document.
                schema = {**medium["schema"], "components": document["components"]}
                validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
                for name, example in examples.items():
                    checked += 1
                    value = resolve(document, example)["value"]
                    for error in validator.iter_errors(value):
                        bad.append(f"{method.upper()} {route} {where} example `{name}`: {error.message}")
    for line in bad:
        print(f"openapi example: {line}", file=sys.stderr)
    print(f"openapi examples: {checked} checked, {len(bad)} bad")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.yaml"))
