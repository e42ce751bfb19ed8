"""dbt_mxcp.uri: resource URI templates (RFC 6570 simple expansion) and matching."""

from __future__ import annotations

import pytest

from dbt_mxcp.uri import UriTemplate


def test_variables_in_order() -> None:
    t = UriTemplate("orders://{customer_id}/items/{item_id}")
    assert t.variables == ["customer_id", "item_id"]
    assert not t.is_static


def test_match_extracts_variables() -> None:
    t = UriTemplate("orders://{customer_id}/items/{item_id}")
    assert t.match("orders://42/items/A-7") == {"customer_id": "42", "item_id": "A-7"}


def test_match_rejects_other_uris() -> None:
    t = UriTemplate("orders://{customer_id}/items/{item_id}")
    assert t.match("orders://42/lines/A-7") is None
    assert t.match("invoices://42/items/A-7") is None
    assert t.match("orders://42/items/") is None
    assert t.match("orders://42/items/A-7/extra") is None


def test_match_does_not_cross_a_slash() -> None:
    t = UriTemplate("customers://{customer_id}")
    assert t.match("customers://42") == {"customer_id": "42"}
    assert t.match("customers://42/orders") is None
    assert t.match("customers://") is None


def test_match_does_not_take_a_query_or_fragment() -> None:
    t = UriTemplate("customers://{customer_id}")
    assert t.match("customers://42?x=1") is None
    assert t.match("customers://42#top") is None


def test_literal_text_is_not_a_regex() -> None:
    t = UriTemplate("docs://v1.0/{page}")
    assert t.match("docs://v1.0/intro") == {"page": "intro"}
    assert t.match("docs://v1x0/intro") is None


def test_expand_percent_encodes_values() -> None:
    t = UriTemplate("files://{name}")
    assert t.expand({"name": "a/b c"}) == "files://a%2Fb%20c"
    assert t.expand({"name": "Zoë"}) == "files://Zo%C3%AB"


def test_expand_converts_non_strings() -> None:
    assert UriTemplate("customers://{customer_id}").expand({"customer_id": 42}) == "customers://42"


@pytest.mark.parametrize("value", ["plain", "a/b", "with space", "Zoë & Ünïcode", "50%", "q?x=1#frag", "{braces}"])
def test_expand_then_match_round_trips(value: str) -> None:
    t = UriTemplate("files://{owner}/{name}")
    uri = t.expand({"owner": "me", "name": value})
    assert t.match(uri) == {"owner": "me", "name": value}


def test_match_decodes_percent_escapes() -> None:
    assert UriTemplate("files://{name}").match("files://report%202024.csv") == {"name": "report 2024.csv"}


def test_static_uri() -> None:
    t = UriTemplate("config://settings")
    assert t.is_static
    assert t.variables == []
    assert t.match("config://settings") == {}
    assert t.match("config://settings2") is None
    assert t.match("config://other") is None
    assert t.expand({}) == "config://settings"


@pytest.mark.parametrize("template", ["customers/{customer_id}", "{customer_id}", "1abc://{x}", "://x"])
def test_missing_or_bad_scheme_rejected(template: str) -> None:
    with pytest.raises(ValueError, match="scheme"):
        UriTemplate(template)


@pytest.mark.parametrize("template", ["x://{customer-id}", "x://{}", "x://{+path}", "x://{a,b}", "x://{1a}",
                                      "x://{ a }"])
def test_bad_variable_names_rejected(template: str) -> None:
    with pytest.raises(ValueError, match="variable"):
        UriTemplate(template)


def test_duplicate_variable_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        UriTemplate("x://{id}/{id}")


@pytest.mark.parametrize("template", ["x://{id", "x://id}", "x://{a}/{b", "x://{a{b}}", "x://}{"])
def test_unbalanced_braces_rejected(template: str) -> None:
    with pytest.raises(ValueError, match="brace"):
        UriTemplate(template)
