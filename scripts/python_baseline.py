#!/usr/bin/env python3
"""The job as a user would write it by hand in Python, for `scripts/bench --before` to measure beside dealsync.

Plain `requests` and `sqlite3`: mint an access token from the refresh token, walk the search API for closed-won
deals one day at a time (halving a day whose matches pass the 2,000-record cap of a search), keep money as
`Decimal`, and upsert one row per deal, the record's JSON included. It does less than dealsync (no completeness
proof, no deletions, no quarantine), so the comparison flatters it.

Usage: ZOHO_ACCOUNTS_URL=http://127.0.0.1:PORT ZOHO_CLIENT_ID=… ZOHO_CLIENT_SECRET=… ZOHO_REFRESH_TOKEN=…
       python3 scripts/python_baseline.py FROM TO OUT.db
"""
import json
import os
import sqlite3
import sys
from datetime import datetime, timedelta
from decimal import Decimal

import requests

COLUMNS = ["deal_id", "deal_name", "stage", "amount", "currency", "closing_date", "owner_id", "account_id",
           "modified_time", "raw"]


def token(session, accounts):
    answer = session.post(f"{accounts}/oauth/v2/token", data={
        "grant_type": "refresh_token",
        "client_id": os.environ["ZOHO_CLIENT_ID"],
        "client_secret": os.environ["ZOHO_CLIENT_SECRET"],
        "refresh_token": os.environ["ZOHO_REFRESH_TOKEN"],
    })
    answer.raise_for_status()
    body = answer.json()
    session.headers["Authorization"] = "Zoho-oauthtoken " + body["access_token"]
    return body.get("api_domain") or accounts


def row(deal):
    amount = deal.get("Amount")
    lookup = lambda name: (deal.get(name) or {}).get("id")
    return (deal["id"], deal.get("Deal_Name"), deal["Stage"], None if amount is None else str(amount),
            deal.get("Currency"), deal.get("Closing_Date"), lookup("Owner"), lookup("Account_Name"),
            deal.get("Modified_Time"), json.dumps(deal, default=str))


def fetch(session, api, start, end):
    """The closed-won deals modified in [start, end), or None when the window passes the search cap."""
    stamp = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    criteria = (f"((Stage:equals:Closed Won)and(Modified_Time:between:"
                f"{stamp(start)},{stamp(end - timedelta(seconds=1))}))")
    deals, page = [], 1
    while True:
        answer = session.get(f"{api}/crm/v8/Deals/search",
                             params={"criteria": criteria, "page": page, "per_page": 200})
        if answer.status_code == 204:
            return deals
        if answer.status_code == 400 and answer.json().get("code") == "LIMIT_REACHED":
            return None
        answer.raise_for_status()
        body = json.loads(answer.text, parse_float=Decimal)
        deals += [d for d in body["data"] if d.get("Stage") == "Closed Won"]
        if not body["info"]["more_records"]:
            return deals
        page += 1


def sync(session, api, db, start, end):
    deals = fetch(session, api, start, end)
    if deals is None:
        middle = start + (end - start) / 2
        return sync(session, api, db, start, middle) + sync(session, api, db, middle, end)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
    db.executemany(f"INSERT INTO closed_won_deals VALUES ({', '.join('?' * len(COLUMNS))}) "
                   f"ON CONFLICT (deal_id) DO UPDATE SET {updates}", [row(d) for d in deals])
    db.commit()
    return len(deals)


def main():
    start, end, path = sys.argv[1:4]
    start, end = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
    session = requests.Session()
    api = token(session, os.environ["ZOHO_ACCOUNTS_URL"])
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE IF NOT EXISTS closed_won_deals ({', '.join(COLUMNS)}, PRIMARY KEY (deal_id))")
    fetched = 0
    while start < end:
        fetched += sync(session, api, db, start, min(start + timedelta(days=1), end))
        start += timedelta(days=1)
    print(f"{fetched} deals", file=sys.stderr)


if __name__ == "__main__":
    main()
