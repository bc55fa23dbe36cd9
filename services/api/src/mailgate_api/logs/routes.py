"""EmailEngine's ``GET /v1/logs/{account}``: the account's recent protocol log as a
downloadable text file, one JSON object per line (secrets masked when recorded)."""

from __future__ import annotations

import json

from litestar import Controller, Response, get

from mailgate_api.accounts import service
from mailgate_api.deps import Resources
from mailgate_common import account_log, events, service_settings

# What one answer holds at most, whatever maxLogLines says.
MAX_LINES = 100_000


class LogsController(Controller):
    tags = ["Logs"]

    @get("/v1/logs/{account:str}", summary="The account's recent protocol log (text, one JSON entry a line)")
    async def logs(self, account: str, res: Resources) -> Response[str]:
        async with res.db.sessions() as session:
            await service.get_account(session, account)
            keep = (await service_settings.read(session, ["logs"]))["logs"] or {}
        limit = min(int(keep.get("maxLogLines") or 10000), MAX_LINES)
        rows = await account_log.read(res.db, account, limit)
        if rows:
            body = "".join(json.dumps({"time": events.iso(at), "source": source, "msg": line}) + "\n"
                           for at, source, line in rows)
        else:
            body = f"No logs found for {account}\n"
        return Response(body, media_type="text/plain", headers={
            "Content-Disposition": f'attachment; filename="logs.{account}.txt"'})
