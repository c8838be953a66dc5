"""The workflow format as pydantic models: the fields are the YAML schema.

Pure data: no environment reads, no I/O. Checks that span several sections (edges that
name nodes, placeholders that name state fields...) live in ``checks.py`` so that
every problem in a file is reported at once.

Validation is strict: YAML already gives numbers, booleans and text their own types, so
`max_steps: true` or `required: "yes"` is a mistake to report, not a value to coerce.
(Strict float fields still take ints: `temperature: 1` is fine.)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from agents_pipelines.spec.field_types import FieldTypeName

START = "START"
END = "END"

Identifier = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        max_length=64,
        description="Lower-case letters, digits and underscores, starting with a letter.",
    ),
]
Scalar = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


def rule_broken(problem: str, fix: str) -> PydanticCustomError:
    """A rule across a model's fields is broken; the fix travels in the error's ctx."""
    return PydanticCustomError("workflow_rule", problem, {"fix": fix})


class FlowSpec(_Model):
    name: Identifier = Field(description="The workflow's name; it becomes the Dagster asset key.")
    description: str = Field("", description="The Dagster asset's description.")


class StateField(_Model):
    type: FieldTypeName = Field(description="The value type of this state field.")
    choices: list[str | int] | None = Field(
        None,
        min_length=1,
        description="The only values the field (or each element of a list) may take: "
        "a label set. Sent to Gemini as an enum.",
    )
    required: bool = Field(False, description="A run must supply this field as an input.")
    default: Any = Field(None, description="The value before any node writes the field.")
    description: str = Field(
        "", description="Shown in the Launchpad, and given to the model for structured output."
    )


class StateSpec(_Model):
    fields: dict[Identifier, StateField] = Field(min_length=1)


# Read by `agents-pipelines estimate` only; never sent to Gemini.
EXPECTED_OUTPUT = (
    "Output tokens per call that estimates assume (thinking included); left out: "
    "max_output_tokens, else 1000."
)


class BatchConfig(_Model):
    """Gemini Batch Mode: the calls go in a job, at half the interactive price."""

    poll_s: float = Field(
        30, gt=0, le=3600, description="Seconds between polls of the job's state."
    )
    timeout_s: float = Field(
        86_400,
        gt=0,
        le=172_800,
        description="Seconds before an unfinished job is cancelled and the node fails.",
    )


BATCH = (
    "`true` (or `{poll_s, timeout_s}`): send the calls through Gemini's Batch API, at the "
    "batch price, in one job per node; turnaround can take hours."
)
# Gemini's service tiers a call can ask for (Batch Mode is a setting of its own).
ServiceTierName = Literal["standard", "flex", "priority"]
SERVICE_TIER = (
    "Gemini's service tier: standard (the interactive price), flex (about half the price, "
    "slower and may be refused when busy: 429/503, retried) or priority (above the price)."
)


class LlmOverride(_Model):
    """Per-node settings; each one left out falls back to ``config.llm``."""

    model: str | None = Field(None, min_length=1, description="This node's Gemini model.")
    temperature: float | None = Field(None, ge=0, le=2, description="This node's temperature.")
    max_output_tokens: int | None = Field(
        None, ge=1, description="This node's cap on output tokens per call."
    )
    timeout_s: float | None = Field(
        None, gt=0, le=3600, description="This node's per-request time-out in seconds."
    )
    max_retries: int | None = Field(
        None, ge=0, le=10, description="This node's retries of transient failures."
    )
    expected_output_tokens: int | None = Field(None, ge=1, description=EXPECTED_OUTPUT)
    batch: bool | BatchConfig | None = Field(None, description=BATCH)
    service_tier: ServiceTierName | None = Field(None, description=SERVICE_TIER)


class LlmConfig(_Model):
    """The LLM every node calls, unless the node's own `llm` says otherwise."""

    provider: Literal["google"] = Field("google", description="Gemini, the only provider.")
    model: str = Field("gemini-2.5-flash", min_length=1, description="The Gemini model.")
    temperature: float | None = Field(
        None, ge=0, le=2, description="Sampling temperature; left out: the model's own."
    )
    max_output_tokens: int | None = Field(
        None, ge=1, description="Cap on output tokens per call (thinking included)."
    )
    timeout_s: float = Field(60, gt=0, le=3600, description="Per-request time-out in seconds.")
    max_retries: int = Field(
        3, ge=0, le=10, description="Retries of transient failures (429, 5xx, time-outs)."
    )
    base_url: str | None = Field(
        None, description="A gateway in front of the Gemini API, e.g. https://gw.example.com."
    )
    expected_output_tokens: int | None = Field(None, ge=1, description=EXPECTED_OUTPUT)
    batch: bool | BatchConfig = Field(False, description=BATCH)
    service_tier: ServiceTierName = Field("standard", description=SERVICE_TIER)

    def merged(self, override: LlmOverride | None) -> LlmConfig:
        if override is None:
            return self
        update = {k: getattr(override, k) for k in override.model_fields_set}
        update = {k: v for k, v in update.items() if v is not None}
        if update.get("batch") is True and isinstance(self.batch, BatchConfig):
            update["batch"] = self.batch  # `batch: true` on a node keeps config's timings
        return self.model_copy(update=update)

    @property
    def batch_mode(self) -> BatchConfig | None:
        """The batch settings of a batch call, None for an interactive one."""
        if isinstance(self.batch, BatchConfig):
            return self.batch
        return BatchConfig() if self.batch else None


class Condition(_Model):
    """One comparison of a state field: exactly one operator of `equals`, `not_equals`, `gt`,
    `gte`, `lt`, `lte`, `in`, `contains` or `is_empty` is set."""

    field: Identifier
    equals: Scalar | None = None
    not_equals: Scalar | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    contains: Scalar | None = None
    is_empty: bool | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        if len(self.operators()) != 1:
            raise rule_broken(
                "a condition needs exactly one operator out of equals, not_equals, gt, gte, "
                f"lt, lte, in, contains, is_empty (got {len(self.operators())})",
                "keep one operator, e.g. `{field: approved, equals: true}`; to test two "
                "things, add a route per test",
            )
        return self

    def operators(self) -> dict[str, Any]:
        return self.model_dump(exclude={"field"}, exclude_none=True, by_alias=True)


class Route(_Model):
    when: Condition | None = Field(None, description="Left out on the last, default route.")
    to: str = Field(description="The node this route goes to, or END.")


class Edge(_Model):
    source: str | Annotated[list[str], Field(min_length=1)] = Field(
        alias="from", description="A node id, START, or a list of node ids to join."
    )
    to: str | None = Field(None, description="A node id, or END; or `routes` instead.")
    routes: list[Route] | None = Field(
        None,
        min_length=1,
        description="Conditional edges, tried in order (one `from` only); the last has no `when`.",
    )

    @model_validator(mode="after")
    def _to_or_routes(self) -> Edge:
        if (self.to is None) == (self.routes is None):
            raise rule_broken(
                "an edge needs exactly one of `to` or `routes`",
                "use `to: NODE` for a plain edge, or `routes:` for a conditional one "
                "(its last route, without `when`, is the default)",
            )
        if self.routes is not None and not isinstance(self.source, str):
            raise rule_broken(
                "a routed edge starts from one node, not a list",
                "join the nodes first with `{from: [a, b], to: NODE}`, then route from NODE",
            )
        return self

    @property
    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)


PythonRef = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$",
        description="module:callable, importable from the code location's directory.",
    ),
]


# A step may load data (minutes are normal); a tool call holds up a model that waits for it.
DEFAULT_STEP_TIMEOUT_S = 300.0
DEFAULT_TOOL_TIMEOUT_S = 60.0


class MapSpec(_Model):
    """Run the node once per element of a list field (LangGraph ``Send`` fan-out)."""

    over: Identifier = Field(description="A list[...] state field: one call per element.")
    as_: Identifier = Field(
        alias="as", description="The item's placeholder name; it must not be a state field."
    )
    max_concurrency: int = Field(8, ge=1, le=64, description="Item calls in flight at once.")
    max_items: int = Field(
        1000, ge=1, le=100_000, description="A longer list fails before any call."
    )
    on_item_error: Literal["fail", "skip"] = Field(
        "fail",
        description="`fail` fails the node once an item has used its retries; `skip` writes "
        "the element type's empty value for that item and lists it in `failed_items`.",
    )


# prompts:/NAME/VERSION or prompts:/NAME@ALIAS, as mlflow.genai.load_prompt takes them.
PROMPT_URI = r"^prompts:/[A-Za-z0-9_.\-]+(/[1-9][0-9]*|@[A-Za-z0-9_\-]+)$"


class RegistryPrompt(_Model):
    """A prompt of the MLflow prompt registry, pinned to one version as each run starts;
    its `{{var}}` variables must be state fields."""

    registry: str = Field(
        pattern=PROMPT_URI,
        description='The prompt\'s URI: "prompts:/NAME@ALIAS" (e.g. @production; the version '
        'the alias names as each run starts) or "prompts:/NAME/VERSION".',
    )
    # Set on the copy a run executes (``pin``): the version's URI and its text, {field}s.
    _pinned: tuple[str, str] | None = PrivateAttr(None)

    def pin(self, uri: str, text: str) -> RegistryPrompt:
        """A copy pinned to one version (``uri``, prompts:/NAME/VERSION) with its text."""
        copy = RegistryPrompt(registry=self.registry)
        copy._pinned = (uri, text)
        return copy

    @property
    def pinned_uri(self) -> str | None:
        """The pinned version's URI; None before a run pins it."""
        return None if self._pinned is None else self._pinned[0]


PROMPT = (
    'The user message, {field} placeholders only; or `{registry: "prompts:/NAME@ALIAS"}` '
    "for a prompt of the MLflow prompt registry."
)


def prompt_text(value: str | RegistryPrompt | None) -> str | None:
    """A prompt's text: inline, or a registry prompt's pinned version's. A registry prompt
    has none until a run pins it (graph code only ever sees pinned specs: WorkflowRun)."""
    if not isinstance(value, RegistryPrompt):
        return value
    if value._pinned is None:
        raise TypeError(f"the registry prompt {value.registry} was not pinned before the run")
    return value._pinned[1]


class Node(_Model):
    id: Identifier
    prompt: Annotated[str, Field(min_length=1)] | RegistryPrompt | None = Field(
        None, description=PROMPT
    )
    system: str | None = Field(None, description="An optional system message; same placeholders.")
    function: PythonRef | None = Field(
        None, description="A Python step instead of a prompt: `module:callable`."
    )
    tools: list[PythonRef] = Field(
        default_factory=list,
        description="Python functions (typed, with a docstring) or LangChain tools the model "
        "may call: `module:name`.",
    )
    max_tool_calls: int = Field(
        6, ge=1, le=100, description="Tool calls before the node fails; only with `tools`."
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="Seconds a Python step (default 300) or each tool call (default 60) may "
        "run before the node fails; only with `function` or `tools`.",
    )
    map: MapSpec | None = None
    outputs: list[Identifier] = Field(min_length=1, description="State fields this node writes.")
    llm: LlmOverride | None = None
    cache: bool = Field(
        True,
        description="`false`: always call the model, even with `config.execution.cache` set; "
        "only for an LLM node.",
    )
    description: str = Field(
        "", description="A note for people reading the file; not sent to the model."
    )

    @model_validator(mode="after")
    def _prompt_or_function(self) -> Node:
        if (self.prompt is None) == (self.function is None):
            raise rule_broken(
                "a node needs exactly one of `prompt` (an LLM call) or `function` (a Python step)",
                "keep `prompt: ...` for an LLM call, or `function: module:callable` for a "
                "Python step",
            )
        if self.function is not None:
            extra = [
                key
                for key, value in (
                    ("system", self.system),
                    ("tools", self.tools),
                    ("llm", self.llm),
                    ("cache", "cache" in self.model_fields_set),  # no LLM call to cache
                )
                if value
            ]
            if extra:
                raise rule_broken(
                    f"a Python step (`function`) takes no {', '.join(f'`{k}`' for k in extra)}",
                    "drop them, or make the node an LLM call with `prompt:`",
                )
        return self

    @property
    def calls_llm(self) -> bool:
        return self.function is None

    @property
    def prompt_text(self) -> str | None:
        """The prompt's text: inline, or pinned from the registry (``prompt_text``)."""
        return prompt_text(self.prompt)

    @property
    def python_timeout_s(self) -> float:
        """The limit of the node's Python: its step's whole call, or each tool call."""
        if self.timeout_s is not None:
            return self.timeout_s
        return DEFAULT_STEP_TIMEOUT_S if self.function is not None else DEFAULT_TOOL_TIMEOUT_S


class CacheConfig(_Model):
    """The development cache: an LLM request seen within ``ttl_s`` is answered from it."""

    ttl_s: int = Field(
        ge=1,
        le=31_536_000,
        description="How long a reply is reused, in seconds (at most a year), e.g. 86400.",
    )


class ExecutionConfig(_Model):
    max_steps: int = Field(25, ge=1, le=10_000, description="Steps before a looping run stops.")
    cache: CacheConfig | None = Field(
        None,
        description="Reuse LLM replies for identical requests (development); off unless set.",
    )
    resume: bool = Field(
        True,
        description="A retried or re-executed Dagster run resumes after its last finished "
        "node (and map item) instead of calling them again.",
    )
    checkpoint_ttl_days: int = Field(
        7, ge=1, le=3650, description="Days a run's checkpoints are kept for resuming."
    )
    max_state_value_chars: int = Field(
        1_000_000,
        ge=1,
        le=100_000_000,
        description="The largest value an input or a node (each map item) may put in a state "
        "field, in characters of its text; a larger one fails the run before it is "
        "checkpointed, stored or sent to a model.",
    )
    max_tool_result_chars: int = Field(
        100_000,
        ge=1,
        le=10_000_000,
        description="The largest tool result sent back to the model, in characters (about "
        "25,000 tokens by default); a larger one reaches the model as an error instead.",
    )


# Presidio's recognizers that need no NLP model (patterns, with checksums where the
# identifier has one); the first six are redact_pii's default.
PiiEntity = Literal[
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "CRYPTO",
    "MAC_ADDRESS",
    "URL",
    "US_BANK_NUMBER",
    "US_DRIVER_LICENSE",
    "US_ITIN",
    "US_PASSPORT",
    "UK_NHS",
]
DEFAULT_PII_ENTITIES: tuple[PiiEntity, ...] = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
)


class PiiPattern(_Model):
    """A named regex: each match is replaced by `<NAME>`."""

    name: str = Field(
        pattern=r"^[A-Z][A-Z0-9_]*$",
        max_length=64,
        description="Upper-case letters, digits and underscores, e.g. ORDER_ID: a match is "
        "replaced by `<ORDER_ID>`.",
    )
    regex: str = Field(
        min_length=1,
        description="A regular expression (Python's `regex` module, as Presidio uses it, "
        "case-insensitive), e.g. `ORD-[0-9]{6}`.",
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        import regex  # Presidio's own regex engine: a pattern it accepts, we accept

        try:
            compiled = regex.compile(value)
        except regex.error as exc:
            raise rule_broken(
                f"the regex `{value}` does not compile ({exc})",
                "fix the expression, e.g. `ORD-[0-9]{6}`; quote it in YAML",
            ) from None
        if compiled.search("") is not None:
            raise rule_broken(
                f"the regex `{value}` matches the empty text, so it would mark every position",
                "make it match at least one character, e.g. `[0-9]+` rather than `[0-9]*`",
            )
        return value


class PiiConfig(_Model):
    """What `redact_pii` masks, and whether the prompt sent to the model is masked too."""

    entities: list[PiiEntity] = Field(
        default_factory=lambda: list(DEFAULT_PII_ENTITIES),
        description="Presidio entities to mask (pattern recognizers, no NLP model). "
        "Default: EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, IP_ADDRESS, US_SSN.",
    )
    patterns: list[PiiPattern] = Field(
        default_factory=list, description="Named regexes to mask as well, e.g. order ids."
    )
    before_llm: bool = Field(
        False,
        description="Also mask the prompt sent to the model; by default it reaches the "
        "model as written and only what is stored or printed is masked.",
    )

    @model_validator(mode="after")
    def _names_unique(self) -> PiiConfig:
        names = [p.name for p in self.patterns]
        taken = sorted({n for n in names if names.count(n) > 1 or n in self.entities})
        if taken:
            raise rule_broken(
                f"pattern name(s) {', '.join(taken)} repeat a pattern or an entity",
                "give each pattern its own name, different from the entities'",
            )
        return self


class MlflowConfig(_Model):
    enabled: bool = Field(True, description="Trace and log each run to MLflow.")
    tracking_uri: str = Field(
        "sqlite:///mlflow.db", description="Overridden by MLFLOW_TRACKING_URI in the environment."
    )
    experiment_name: str | None = Field(None, description="Defaults to the flow name.")
    async_logging: bool = Field(
        True, description="Log the trace in the background, off the run's critical path."
    )
    log_artifacts: bool = Field(True, description="Log cost_summary.json and the state files.")
    artifact_level: Literal["minimal", "standard", "full"] = Field(
        "standard",
        description="`minimal`: the cost summary only; `standard`: also inputs and outputs; "
        "`full`: also the whole final state.",
    )
    run_name: str | None = Field(None, description="The MLflow run's name; left out: MLflow's.")
    required: bool = Field(False, description="Fail the run when tracking fails.")
    timeout_s: float = Field(
        60,
        gt=0,
        le=3600,
        description="Longest wait for MLflow in a run, its start and end together; "
        "past it the run goes on untracked (or fails when required).",
    )
    retention_days: int | None = Field(
        None,
        ge=1,
        le=36500,
        description="Days this workflow's MLflow runs (with their artifacts and traces), "
        "checkpoints, spend-journal rows and development-cache entries are kept: "
        "`agents-pipelines prune` and the `agents_pipelines_prune` job delete older ones "
        "for good. Left out: kept until deleted by hand.",
    )

    redact_pii: bool | PiiConfig = Field(
        False,
        description="Mask personal data (emails, phone numbers, cards...) as `<ENTITY>` in "
        "everything the run stores or prints: traces, params, artifacts, Dagster metadata, "
        "logs, cache, cassettes; checkpoints are encrypted instead. `true`: the default "
        "entities; or `{entities, patterns, before_llm}`.",
    )

    def pii(self) -> PiiConfig | None:
        """``redact_pii`` as a PiiConfig (``true``: the defaults), or None when off."""
        if self.redact_pii is True:
            return PiiConfig()
        return self.redact_pii or None


class OtlpConfig(_Model):
    """An OpenTelemetry collector that gets each run's trace and GenAI metrics too. The
    standard OTEL_EXPORTER_OTLP_* variables, when set, win over this block."""

    endpoint: str = Field(
        pattern=r"^https?://[^\s/]+",
        description="The collector's base URL, e.g. http://otel-collector:4318 (OTLP/HTTP; "
        "/v1/traces and /v1/metrics are added) or http://otel-collector:4317 (grpc). "
        "Headers (a token) come from OTEL_EXPORTER_OTLP_HEADERS, never from this file.",
    )
    protocol: Literal["http/protobuf", "grpc"] = Field(
        "http/protobuf", description="OTLP over HTTP (the OpenTelemetry default) or gRPC."
    )


class ObservabilityConfig(_Model):
    mlflow: MlflowConfig = MlflowConfig()
    otlp: OtlpConfig | None = Field(
        None,
        description="Send each run's trace and metrics to an OpenTelemetry collector as well; "
        "MLflow keeps its own copy.",
    )


class TierPrice(_Model):
    """USD per million tokens at one service tier."""

    input_per_million: float = Field(ge=0, description="USD per million input tokens.")
    output_per_million: float = Field(
        ge=0, description="USD per million output tokens (thinking included)."
    )
    cached_input_per_million: float | None = Field(
        None, ge=0, description="USD per million cached input tokens; left out: the input price."
    )


class ModelPrice(TierPrice):
    """USD per million tokens; overrides MLflow's bundled price table for one model. The
    rates above are the standard tier's; ``service_tiers`` prices the others."""

    service_tiers: dict[Literal["flex", "priority", "batch"], TierPrice] = Field(
        default_factory=dict,
        description="Rates per service tier (flex, priority, batch). A tier left out is "
        "priced at the standard rates above.",
    )


class WorkflowConfig(_Model):
    llm: LlmConfig = LlmConfig()
    execution: ExecutionConfig = ExecutionConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    pricing: dict[str, ModelPrice] = Field(default_factory=dict)


class ScheduleConfig(_Model):
    """A Dagster schedule that materializes the workflow with these inputs."""

    cron: str = Field(description='Cron expression, e.g. "0 9 * * *".')
    timezone: str = Field("UTC", description="IANA time zone, e.g. Europe/Paris.")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Inputs of the scheduled runs, over the defaults."
    )
    default_status: Literal["running", "stopped"] = Field(
        "stopped", description="Whether the schedule runs before anyone turns it on in the UI."
    )


class SensorConfig(_Model):
    """Start one run per input dropped into a folder (JSON, YAML, or JSONL for many)."""

    path: str = Field(description='A glob, relative to the code location, e.g. "inbox/*.json".')
    minimum_interval_seconds: int = Field(
        30, ge=1, le=86_400, description="Seconds between two looks at the folder."
    )
    max_runs_per_tick: int = Field(
        100,
        ge=1,
        le=10_000,
        description="The most runs (and files read) a tick requests; the rest go on the next.",
    )
    default_status: Literal["running", "stopped"] = Field(
        "running", description="Whether the sensor runs before anyone turns it on in the UI."
    )


class TimePartitions(_Model):
    """Dagster time partitions; the partition key is written to the input field ``field``."""

    start: str = Field(
        description='The first partition: "2026-11-01" (hourly also "2026-11-01-06:00"), '
        "from 1970-01-01 to 2100-01-01; at most 50,000 partitions up to today or `end`."
    )
    end: str | None = Field(
        None, description="Exclusive end, in the same form; left out, partitions go on."
    )
    timezone: str = Field(
        "UTC", description="IANA time zone, e.g. Europe/Paris (not localtime nor Factory)."
    )
    field: Identifier = Field(description="A `str` input field that receives the partition key.")


class PartitionsConfig(_Model):
    """Static partitions (each key with its inputs), dynamic ones (added by the sensor), or
    time partitions (hourly, daily, weekly or monthly)."""

    static: dict[str, dict[str, Any]] | None = Field(
        None, min_length=1, description="`{KEY: {input: value}}`: each key with its inputs."
    )
    dynamic: bool = Field(
        False, description="The file-drop sensor adds one partition per input (needs `sensor`)."
    )
    hourly: TimePartitions | None = Field(None, description="One partition per hour.")
    daily: TimePartitions | None = Field(None, description="One partition per day.")
    weekly: TimePartitions | None = Field(None, description="One partition per week, from Sunday.")
    monthly: TimePartitions | None = Field(
        None, description="One partition per month, from the 1st."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> PartitionsConfig:
        kinds = [name for name in ("static", *TIME_PARTITION_KINDS) if getattr(self, name)]
        kinds += ["dynamic"] if self.dynamic else []
        if len(kinds) != 1:
            raise rule_broken(
                "partitions need exactly one of `static: {...}`, `dynamic: true`, `hourly`, "
                "`daily`, `weekly` or `monthly`" + (f" (got {', '.join(kinds)})" if kinds else ""),
                "use `static: {KEY: {input: value}}` for fixed partitions, `dynamic: true` for "
                'the sensor\'s, or `daily: {start: "2026-11-01", field: day}` for dates',
            )
        return self

    @property
    def time(self) -> tuple[str, TimePartitions] | None:
        """(kind, settings) of a time-partitioned workflow, else None."""
        for kind in TIME_PARTITION_KINDS:
            if (value := getattr(self, kind)) is not None:
                return kind, value
        return None


TIME_PARTITION_KINDS = ("hourly", "daily", "weekly", "monthly")


class Dependency(_Model):
    """An upstream workflow whose output fields feed this workflow's inputs."""

    workflow: Identifier
    map: dict[Identifier, Identifier] = Field(
        default_factory=dict, description="This workflow's input ← the upstream state field."
    )


class OnCron(_Model):
    on_cron: str = Field(description="Materialize when this cron tick passes and inputs are newer.")
    timezone: str = Field("UTC", description="IANA time zone of the cron expression.")


class RetryConfig(_Model):
    """Dagster step retries of transient failures (429, 5xx, time-outs)."""

    max_retries: int = Field(2, ge=0, le=10, description="Retries of a failed step.")
    delay_s: float = Field(10, ge=0, le=3600, description="Seconds before the first retry.")
    backoff: Literal["exponential", "linear"] = Field(
        "exponential", description="How the delay grows between retries."
    )
    jitter: Literal["full", "plus_minus", "none"] = Field(
        "plus_minus", description="Random spread of the delay, so retries do not collide."
    )


class BudgetConfig(_Model):
    """The asset check `budget`: a call that would take the run past it is not sent."""

    max_cost_usd: float | None = Field(None, gt=0, description="USD per run.")
    max_total_tokens: int | None = Field(None, gt=0, description="Tokens per run.")
    blocking: bool = Field(True, description="Downstream workflows wait for a passing check.")

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetConfig:
        if self.max_cost_usd is None and self.max_total_tokens is None:
            raise rule_broken(
                "a budget needs max_cost_usd, max_total_tokens, or both",
                "add e.g. `max_cost_usd: 0.5`",
            )
        return self


class SpendLimitConfig(_Model):
    """At most ``max_cost_usd`` per calendar day or month, over every run of the workflow."""

    per: Literal["day", "month"] = Field(description="The calendar window: day or month.")
    max_cost_usd: float = Field(
        gt=0, description="USD over every run of the workflow in the window."
    )
    timezone: str = Field("UTC", description="IANA time zone the window's calendar follows.")


class OutputCheck(_Model):
    """An asset check on one output field: exactly one rule of `min_length`, `max_length`,
    `min`, `max` or `not_empty` is set; `blocking` checks keep downstream assets waiting."""

    field: Identifier
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)
    min: float | None = None
    max: float | None = None
    not_empty: bool | None = None
    blocking: bool = False

    @model_validator(mode="after")
    def _one_rule(self) -> OutputCheck:
        if len(self.rules()) != 1:
            raise rule_broken(
                "an output check needs exactly one of min_length, max_length, min, max, "
                f"not_empty (got {len(self.rules())})",
                "keep one rule per check; list another check for each further rule",
            )
        return self

    def rules(self) -> dict[str, Any]:
        return self.model_dump(exclude={"field", "blocking"}, exclude_none=True)

    @property
    def name(self) -> str:
        ((rule, value),) = self.rules().items()
        return f"{self.field}_{rule}_{value}".replace(".", "_").replace("-", "neg").lower()

    def rule(self) -> Rule:
        """The check as an eval's rule: both are tested by one evaluator
        (state_evals.rule_check)."""
        return Rule.model_validate({"field": self.field, **self.rules()})


EXTRA_RULE_OPERATORS = ("min_length", "max_length", "min", "max", "not_empty")


class Rule(Condition):
    """An eval's test of one state field, with exactly one operator: a route's `equals`,
    `not_equals`, `gt`, `gte`, `lt`, `lte`, `in`, `contains`, `is_empty`, or an output check's
    `min_length`, `max_length`, `min`, `max`, `not_empty`."""

    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)
    min: float | None = None
    max: float | None = None
    not_empty: bool | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Rule:  # replaces Condition's: more operators
        if len(self.operators()) != 1:
            raise rule_broken(
                "a rule needs exactly one operator out of equals, not_equals, gt, gte, lt, "
                "lte, in, contains, is_empty, min_length, max_length, min, max, not_empty "
                f"(got {len(self.operators())})",
                "keep one operator, e.g. `{field: title, max_length: 80}`; to test two "
                "things, add an eval per test",
            )
        return self

    @property
    def operator(self) -> tuple[str, Any]:
        """(operator, value), e.g. ("max_length", 80)."""
        ((operator, value),) = self.operators().items()
        return operator, value

    def as_condition(self) -> Condition:
        """The rule as a route condition: for a route operator only."""
        operator, value = self.operator
        return Condition.model_validate({"field": self.field, operator: value})


class EvalSpec(_Model):
    """A test of the final state, run after every run: an LLM judge or a rule."""

    name: Identifier = Field(description="The asset check's name; unique per workflow.")
    judge: Annotated[str, Field(min_length=1)] | RegistryPrompt | None = Field(
        None,
        description="A question about the final state, {field} placeholders only; "
        "the judge model answers pass or fail with a rationale. Or "
        '`{registry: "prompts:/NAME@ALIAS"}` for a question kept in the MLflow prompt registry.',
    )
    rule: Rule | None = None
    model: str | None = Field(
        None, min_length=1, description="The judge's model; left out: config.llm.model."
    )
    blocking: bool = Field(False, description="A failed eval stops downstream workflows.")

    @model_validator(mode="after")
    def _judge_or_rule(self) -> EvalSpec:
        if (self.judge is None) == (self.rule is None):
            raise rule_broken(
                "an eval needs exactly one of `judge` (a question for an LLM) or `rule` "
                "(a test of one field)",
                'keep `judge: "Is {summary} faithful to {text}?"`, or '
                "`rule: {field: title, max_length: 80}`; list another eval for the other",
            )
        if self.rule is not None and self.model is not None:
            raise rule_broken(
                "a rule eval takes no `model`: only a judge calls one",
                "drop `model`, or make the eval a `judge`",
            )
        return self

    @property
    def judge_text(self) -> str | None:
        """The judge's question: inline, or pinned from the registry (``prompt_text``)."""
        return prompt_text(self.judge)

    @property
    def kind(self) -> Literal["judge", "rule"]:
        return "judge" if self.judge is not None else "rule"


class BackfillConfig(_Model):
    """How a backfill groups partitions into runs (Dagster's multi-run backfill policy)."""

    max_partitions_per_run: int = Field(
        1,
        ge=1,
        le=1000,
        description="Partitions one run materializes; each is its own workflow run, with its "
        "own metadata, MLflow run and checks. 1: one run per partition.",
    )
    max_concurrency: int = Field(
        1,
        ge=1,
        le=64,
        description="Partitions of one run that run at once; the pool and each node's "
        "max_concurrency still bound the calls in flight.",
    )


class OrchestrationConfig(_Model):
    group: Identifier | None = Field(None, description="The Dagster asset group.")
    pool: Identifier = Field(
        "gemini", description="The Dagster pool bounding concurrent runs of this workflow."
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Default inputs of a materialization."
    )
    schedule: ScheduleConfig | None = None
    sensor: SensorConfig | None = None
    partitions: PartitionsConfig | None = None
    backfill: BackfillConfig | None = Field(
        None,
        description="Several partitions per run (static or time partitions): "
        "`{max_partitions_per_run: 12, max_concurrency: 4}`. Left out: one partition per run.",
    )
    deps: list[Dependency] = Field(default_factory=list)
    automation: Literal["eager"] | OnCron | None = Field(
        None,
        description="Declarative automation: `eager` (materialize when an upstream workflow "
        "does), or `on_cron` with its `timezone`.",
    )
    retry: RetryConfig = RetryConfig()
    budget: BudgetConfig | None = None
    spend_limits: list[SpendLimitConfig] = Field(default_factory=list)
    checks: list[OutputCheck] = Field(default_factory=list)


class WorkflowSpec(_Model):
    schema_version: Literal["1"] = Field(description='The file format\'s version: "1".')
    flow: FlowSpec
    state: StateSpec
    nodes: list[Node] = Field(min_length=1)
    edges: list[Edge] = Field(min_length=1)
    config: WorkflowConfig = WorkflowConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    evals: list[EvalSpec] = Field(
        default_factory=list,
        description="LLM judges and rules run on the final state: one asset check each.",
    )

    def node(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.id == node_id)

    @property
    def written_fields(self) -> set[str]:
        return {field for node in self.nodes for field in node.outputs}

    @property
    def input_fields(self) -> list[str]:
        """State fields no node writes: what a run is given."""
        written = self.written_fields
        return [name for name in self.state.fields if name not in written]

    def models_used(self) -> list[str]:
        return sorted(
            {self.config.llm.merged(node.llm).model for node in self.nodes if node.calls_llm}
        )
