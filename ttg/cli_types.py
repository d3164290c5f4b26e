"""Click parameter types for options the settings codec reads (shared by the ``ttg`` commands)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ttg.config import setting_converter
from ttg.errors import ConfigError

if TYPE_CHECKING:  # click 8.2 made ParamType generic; at run time the plain class serves every click >= 8.1
    _ParamType = click.ParamType[Any, Any]
else:
    _ParamType = click.ParamType


class Setting(_ParamType):
    """An option read by the settings codec (:mod:`ttg.config`): the same converter as its TTG_* variable, so the two
    cannot disagree, and ``--help`` shows its type (``INTEGER 1..1,024``, ``[redis|rabbitmq]``) instead of TEXT."""

    def __init__(self, setting: str, metavar: str | None = None) -> None:
        self.convert_setting = setting_converter(setting)
        self.name = metavar or str(getattr(self.convert_setting, "metavar", "TEXT"))

    def get_metavar(self, param: click.Parameter, ctx: click.Context) -> str:
        return self.name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return self.convert_setting(value)
        except ConfigError as e:
            self.fail(str(e), param, ctx)
