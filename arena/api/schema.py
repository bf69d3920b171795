"""OpenAPI: describe the Api-Key scheme (imported when the app is ready)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "arena.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key pa_<prefix>_<secret>`: a lab's or a policy owner's key.",
        }


NO_NUL = "^[^\\u0000]*$"


def document_refused_characters(result: dict, generator, request, public: bool) -> dict:
    """drf-spectacular postprocessing hook: request strings without a pattern of their own get one excluding
    NUL, which every input ``CharField`` refuses (``null_characters_not_allowed``)."""
    for name, component in result.get("components", {}).get("schemas", {}).items():
        if not name.endswith("Request"):
            continue
        for prop in component.get("properties", {}).values():
            if prop.get("type") == "string" and not ({"pattern", "enum", "format"} & set(prop)):
                prop["pattern"] = NO_NUL
    return result
