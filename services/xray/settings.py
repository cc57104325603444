"""The ``[xray]`` config section: the site's dose limits and lawful scan reasons."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class XraySettings(BaseModel):
    """Per-site dose policy for body scanners.

    The default limit is 250 µSv a year (0.25 mSv, ANSI N43.17 limited-use
    scanners); a site sets its own limit and warning level.
    """

    model_config = ConfigDict(extra="forbid")
    limit_usv: float = Field(default=250.0, gt=0, le=1_000_000, description="Rolling 12-month dose limit per person (µSv).")
    warning_usv: float = Field(default=200.0, gt=0, le=1_000_000, description="A scan crossing this total raises an alarm (µSv).")
    window_months: int = Field(default=12, ge=1, le=120, description="Length of the rolling window.")
    allowed_reasons: list[str] = Field(
        default_factory=lambda: ["intelligence_led", "authorised_cohort"],
        description="Reason codes this site accepts; any other (or none) raises xray.unlawful_scan.")
    dose_topic: str = Field(default="edge/v1/{site}/xray/dose",
                            description="Where central publishes signed dose totals from other sites.")

    @field_validator("dose_topic")
    @classmethod
    def _topic_template(cls, value: str) -> str:
        try:
            topic = value.format(site="s")
        except (KeyError, IndexError, ValueError):
            raise ValueError("may use only the {site} placeholder, e.g. edge/v1/{site}/xray/dose") from None
        if any(c in topic for c in "#+") or not topic:
            raise ValueError("must be a plain topic (no MQTT wildcards)")
        return value

    @model_validator(mode="after")
    def _warning_below_limit(self) -> XraySettings:
        if self.warning_usv > self.limit_usv:
            raise ValueError(f"warning_usv ({self.warning_usv}) must not exceed limit_usv ({self.limit_usv})")
        return self
