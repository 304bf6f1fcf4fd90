"""Tests for mirror.cli.gotemplate: the Go text/template subset behind ``inspect --format``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import Struct, field

from mirror.cli.gotemplate import normalize_format, render
from mirror.errors import UsageError

# The shape of `skopeo inspect` output (inspect.Output), as the CLI would pass it.
INSPECT = {
    "Name": "docker.io/library/alpine",
    "Digest": "sha256:1e42bbe2508154c9126d48c2b8a75420c3544343bf86fd041fb7527e017a4b4a",
    "RepoTags": ["3.19", "3.20", "latest"],
    "Created": "2024-07-22T22:26:43.778747613Z",
    "DockerVersion": "",
    "Labels": {"org.opencontainers.image.version": "3.20", "maintainer": "Jane <jane@example.com>"},
    "Architecture": "amd64",
    "Os": "linux",
    "Layers": ["sha256:c6a83fedfae6ed8a4f5f7cbb6a7b6f1c1ec3d86fea8cb9e5ba2e5e6673fde9f6"],
    "LayersData": [{"MIMEType": "application/vnd.oci.image.layer.v1.tar+gzip", "Size": 3623807}],
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "NoLabels": None,
    "Empty": [],
    "Size": 3623807,
    "Ratio": 0.5,
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Name: {{.Name}} Digest: {{.Digest}}", f"Name: {INSPECT['Name']} Digest: {INSPECT['Digest']}"),
        ("{{.Architecture}}", "amd64"),
        ("{{.Os}}/{{.Architecture}}", "linux/amd64"),
        ('{{index .Labels "maintainer"}}', "Jane <jane@example.com>"),
        ('{{index .Labels "org.opencontainers.image.version"}}', "3.20"),
        (
            "{{json .Labels}}",
            '{"org.opencontainers.image.version":"3.20","maintainer":"Jane <jane@example.com>"}',
        ),
        ("{{.Labels | json}}", '{"org.opencontainers.image.version":"3.20","maintainer":"Jane <jane@example.com>"}'),
        ("{{json .RepoTags}}", '["3.19","3.20","latest"]'),
        ("{{json .LayersData}}", '[{"MIMEType":"application/vnd.oci.image.layer.v1.tar+gzip","Size":3623807}]'),
        ("{{json .NoLabels}}", "null"),
        ("{{range .RepoTags}}{{.}} {{end}}", "3.19 3.20 latest "),
        ("{{range $i, $t := .RepoTags}}{{$i}}={{$t}};{{end}}", "0=3.19;1=3.20;2=latest;"),
        ("{{range $t := .RepoTags}}<{{$t}}>{{end}}", "<3.19><3.20><latest>"),
        ("{{range $k, $v := .Labels}}{{$k}}|{{end}}", "maintainer|org.opencontainers.image.version|"),
        ("{{range .Empty}}x{{else}}none{{end}}", "none"),
        ("{{range .NoLabels}}x{{else}}none{{end}}", "none"),
        ("{{range .Missing}}x{{end}}", ""),
        ("{{range .LayersData}}{{.Size}} {{.MIMEType}}{{end}}", "3623807 application/vnd.oci.image.layer.v1.tar+gzip"),
        ("{{len .Layers}} {{len .RepoTags}} {{len .Name}} {{len .NoLabels}}", "1 3 24 0"),
        ("{{.RepoTags}}", "[3.19 3.20 latest]"),
        ("{{.Labels}}", "map[maintainer:Jane <jane@example.com> org.opencontainers.image.version:3.20]"),
        ("{{.Empty}} {{.Size}} {{.Ratio}}", "[] 3623807 0.5"),
        (
            "{{.Missing}}|{{.NoLabels}}|{{.Missing.Deeper}}|{{.NoLabels.x}}",
            "<no value>|<no value>|<no value>|<no value>",
        ),
        ('{{index .Labels "absent"}}|{{index .NoLabels "x"}}', "|"),
        (
            "{{index .RepoTags 1}} {{index .LayersData 0 | json}}",
            '3.20 {"MIMEType":"application/vnd.oci.image.layer.v1.tar+gzip","Size":3623807}',
        ),
        ('{{index .LayersData 0 "Size"}}', "3623807"),
        ("{{if .RepoTags}}tagged{{else}}untagged{{end}}", "tagged"),
        ("{{if .Empty}}tagged{{else}}untagged{{end}}", "untagged"),
        ("{{if .DockerVersion}}a{{else if .Os}}b{{else}}c{{end}}", "b"),
        ("{{if .NoLabels}}a{{else if .Missing}}b{{else}}c{{end}}", "c"),
        ("{{with .LayersData}}{{len .}}{{else}}none{{end}}", "1"),
        ('{{if and .NoLabels .NoLabels.x}}y{{else}}n{{end}} {{or .DockerVersion "unknown"}}', "n unknown"),
        ('{{if not .Empty}}empty{{end}} {{if eq .Os "linux" "darwin"}}unix{{end}}', "empty unix"),
        ('{{if gt .Size 1000}}big{{end}} {{if lt .Ratio 1}}small{{end}} {{ne .Os "linux"}}', "big small false"),
        ('{{printf "%s-%d" .Architecture .Size}}', "amd64-3623807"),
        (
            '{{printf "%v %q %t %5s|%-5s|%03d|%.2f" .RepoTags .Os true "a" "b" 7 .Ratio}}',
            '[3.19 3.20 latest] "linux" true     a|b    |007|0.50',
        ),
        (
            '{{printf "%d" .Os}} {{printf "%s"}} {{printf "%s" 1 2}}',
            "%!d(string=linux) %!s(MISSING) %!s(int=1)%!(EXTRA int=2)",
        ),
        ('{{printf "%.3s" .Name | printf "[%s]"}}', "[doc]"),
        ("{{println .Os .Size}}", "linux 3623807\n"),
        ('{{print "a" 1 2 "b"}}', "a1 2b"),
        ("{{.Name | len}} {{(index .RepoTags 0)}} {{(index .LayersData 0).Size}}", "24 3.19 3623807"),
        (
            '{{join .RepoTags ","}} {{upper .Os}} {{lower "ABC"}} {{title "hello world"}}',
            "3.19,3.20,latest LINUX abc Hello World",
        ),
        ('{{split "a:b" ":"}} [{{pad "x" 1 2}}] {{truncate .Name 6}}', "[a b] [ x  ] docker"),
        (
            "{{$n := .Name}}{{range .RepoTags}}{{$n}}:{{.}} {{end}}",
            f"{INSPECT['Name']}:3.19 {INSPECT['Name']}:3.20 {INSPECT['Name']}:latest ",
        ),
        ("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", "2"),
        ("{{range .RepoTags}}{{$.Os}}{{end}}", "linuxlinuxlinux"),
        ("a  {{- .Os -}}  b", "alinuxb"),
        ("a\n\t{{- /* a comment */ -}}\n b", "ab"),
        ("x{{/* comment */}}y", "xy"),
        ("{{- .Os}}", "linux"),
        ("{{-3}} {{ 0x1F }} {{1e3}} {{1.5}} {{'a'}} {{010}} {{1_000}}", "-3 31 1000 1.5 97 8 1000"),
        ('{{"tab\\there \\"q\\" \\u00e9 \\x41"}}', 'tab\there "q" é A'),
        ("{{`raw \\n {{ text`}}", "raw \\n {{ text"),
        ("{{true}} {{false}}", "true false"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert render(template, INSPECT) == expected


def test_dot_prints_the_whole_value_as_go_does() -> None:
    data = {"b": [1, True, None, 2.5], "a": {"y": 1e6, "x": "s"}, "c": 100000.0}
    assert render("{{.}}", data) == "map[a:map[x:s y:1e+06] b:[1 true <nil> 2.5] c:100000]"
    assert render("{{json .}}", data) == '{"b":[1,true,null,2.5],"a":{"y":1000000,"x":"s"},"c":100000}'


def test_json_escapes_like_go_without_html_escaping() -> None:
    data = {"s": 'a"b\\c\n\x01<>&\u2028é', "tiny": 1e-7, "huge": 1e21, "nan": float("nan")}
    assert render("{{json .s}}", data) == '"a\\"b\\\\c\\n\\u0001<>&\\u2028é"'
    assert render("{{json .tiny}} {{json .huge}}", data) == "1e-7 1e+21"
    assert render("[{{json .nan}}]", data) == "[]"  # skopeo's json prints nothing on encoder errors


class Layer(Struct, frozen=True):  # mirror's values are msgspec Structs
    digest: str
    size: int


class Output(Struct, frozen=True):
    Name: str
    repo_tags: list[str]
    layers_data: list[Layer] = field(default_factory=list)


def test_attribute_lookup_on_objects() -> None:
    out = Output("quay.io/x/y", ["a", "b"], [Layer("sha256:00", 5)])
    assert render("{{.Name}} {{.RepoTags}} {{range .LayersData}}{{.Digest}}/{{.Size}}{{end}}", out) == (
        "quay.io/x/y [a b] sha256:00/5"
    )
    assert render("{{index .LayersData 0}}", out) == "{sha256:00 5}"
    assert render("{{json .LayersData}}", out) == '[{"digest":"sha256:00","size":5}]'
    with pytest.raises(UsageError, match="can't evaluate field Nope in type Output"):
        render("{{.Nope}}", out)
    with pytest.raises(UsageError, match="can't evaluate field __class__"):
        render("{{.__class__}}", out)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{.Name", "template: :1: unclosed action"),
        ("{{if .Name}}x", "template: :1: unexpected EOF"),
        ("a\n{{range .RepoTags}}x{{else}}", "template: :2: unexpected EOF"),
        ("{{end}}", "template: :1: unexpected {{end}}"),
        ("{{else}}", "template: :1: unexpected {{else}}"),
        ("{{if 1}}{{else}}{{else}}{{end}}", "template: :1: expected end; found {{else}}"),
        ("{{foo .Name}}", 'template: :1: function "foo" not defined'),
        ("{{}}", "template: :1: missing value for command"),
        ("{{if}}{{end}}", "template: :1: missing value for if"),
        ("{{$x}}", 'template: :1: undefined variable "$x"'),
        ('{{"abc}}', "template: :1: unterminated quoted string"),
        ("{{`abc}}", "template: :1: unterminated raw quoted string"),
        ('{{"\\q"}}', "template: :1: invalid syntax"),
        ("{{3x}}", 'template: :1: bad number syntax: "3x"'),
        ("{{ # }}", 'template: :1: unexpected "#" in operand'),
        ("{{(.Name}}", "template: :1: unclosed left paren"),
        ("{{.Name)}}", 'template: :1: unexpected ")" in command'),
        ("{{.Name | 3}}", "template: :1: non executable command in pipeline stage 2"),
        ("{{nil}}", "template: :1: nil is not a command"),
        ("{{/* unclosed", "template: :1: unclosed comment"),
        ('{{define "x"}}{{end}}', "template: :1: {{define}} is not supported"),
        ("{{.Name.Bar}}", 'template: :1:7: executing "" at <.Name.Bar>: can\'t evaluate field Bar in type string'),
        ("x\n  {{.Size.X.Y}}", 'template: :2:9: executing "" at <.Size.X.Y>: can\'t evaluate field X in type int'),
        (
            "{{index .RepoTags 5}}",
            'template: :1:2: executing "" at <index .RepoTags 5>: error calling index: index out of range: 5',
        ),
        ("{{len .Size}}", 'template: :1:2: executing "" at <len .Size>: error calling len: len of type int'),
        (
            "{{printf}}",
            'template: :1:2: executing "" at <printf>: wrong number of args for printf: want at least 1 got 0',
        ),
        ("{{len 1 2}}", 'template: :1:2: executing "" at <len>: wrong number of args for len: want 1 got 2'),
        ("{{.Os 1}}", 'template: :1:2: executing "" at <.Os>: can\'t give argument to non-function .Os'),
        (
            "{{range .Name}}{{end}}",
            'template: :1:8: executing "" at <.Name>: range can\'t iterate over docker.io/library/alpine',
        ),
        ('{{eq .Size "1"}}', 'executing "" at <eq .Size "1">: error calling eq: incompatible types for comparison'),
        ("{{upper .Size}}", "wrong type for value; expected string; got int"),
    ],
)
def test_errors_are_one_line_usage_errors(template: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        render(template, INSPECT)
    assert message in str(caught.value)
    assert str(caught.value).startswith("template: ")
    assert "\n" not in str(caught.value)


def test_error_message_uses_the_template_name_and_escapes_newlines() -> None:
    with pytest.raises(UsageError, match=r"^template: skopeo inspect:1:5: executing \"skopeo inspect\" at <\.Os\.X>"):
        render("{{.Os.X}}", INSPECT, name="skopeo inspect")
    with pytest.raises(UsageError) as caught:
        render("{{`a\nb` 1}}", INSPECT)
    assert "\n" not in str(caught.value) and "a\\nb" in str(caught.value)


def test_deep_nesting_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        render("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", {})


def test_normalize_format() -> None:
    assert normalize_format(r"{{.Name}}\t{{.Digest}}") == "{{.Name}}\t{{.Digest}}\n"
    assert normalize_format("{{.Name}}\n") == "{{.Name}}\n"


@given(st.text().filter(lambda s: "{{" not in s))
def test_text_without_actions_is_unchanged(text: str) -> None:
    assert render(text, INSPECT) == text


TEMPLATE_PIECES = [
    *"{}.$|()\"'`\\-:= ,/*\n\t0123456789aeNxX_é",
    *("{{", "}}", "{{-", " -}}", "/*", "*/", ".Name", ".RepoTags", ".Labels", "$i", "range ", "if ", "else", "end"),
    *("with ", "index ", "len ", "printf ", "json ", "eq ", "and ", '"%s"', '"%d"', " 1", "nil", "true", ":="),
]
TEMPLATE_ALPHABET = st.sampled_from(TEMPLATE_PIECES)


@settings(max_examples=400)
@given(st.lists(TEMPLATE_ALPHABET, max_size=40).map("".join))
def test_template_like_text_renders_or_raises_usage_error(template: str) -> None:
    try:
        assert isinstance(render(template, INSPECT), str)
    except UsageError as err:
        assert "\n" not in str(err)


@given(st.text(max_size=200))
def test_arbitrary_text_renders_or_raises_usage_error(template: str) -> None:
    for candidate in (template, "{{" + template + "}}"):
        try:
            render(candidate, INSPECT)
        except UsageError:
            pass
