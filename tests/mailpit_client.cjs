// Drives qqmx's control API through the npm package `mailpit-api`, a client written for
// Mailpit, and prints what each call answered as one JSON object. tests/mailpit.rs runs
// it and checks the answers. Arguments: the directory the package was installed into
// (with `npm install --prefix`), the API's base URL and its token.
"use strict";
const path = require("node:path");

const [dir, baseURL, token] = process.argv.slice(2);
const { MailpitClient } = require(path.join(dir, "node_modules", "mailpit-api"));

async function main() {
  // The scheme in lower case, as some clients write it.
  const mailpit = new MailpitClient(baseURL, {
    fetchOptions: { headers: { Authorization: `bearer ${token}` } },
  });
  const out = {};
  out.list = await mailpit.listMessages();
  out.page = await mailpit.listMessages(1, 1);
  out.one = await mailpit.getMessageSummary(out.list.messages[0].ID);
  out.latest = await mailpit.getMessageSummary();
  out.headers = await mailpit.getMessageHeaders(out.latest.ID);
  out.source = await mailpit.getMessageSource(out.latest.ID);
  out.search = await mailpit.searchMessages({ query: "subject:invoice" });
  out.searchTo = await mailpit.searchMessages({ query: "to:10001@qq.com after:2025-06-01" });
  out.searchNone = await mailpit.searchMessages({ query: "before:2025-06-01" });
  // Already there: the first look finds it.
  out.waited = await mailpit.waitForMessage({ query: "subject:reminder" });
  out.deleteIds = await mailpit.deleteMessages({ IDs: [out.list.messages[0].ID] });
  out.afterDeleteIds = await mailpit.listMessages();
  out.deleteSearch = await mailpit.deleteMessagesBySearch({ query: "subject:reminder" });
  out.afterDeleteSearch = await mailpit.listMessages();
  out.deleteAll = await mailpit.deleteMessages();
  out.afterDeleteAll = await mailpit.listMessages();
  process.stdout.write(JSON.stringify(out));
}

main().catch((error) => {
  process.stderr.write(`${error.message}\n`);
  process.exit(1);
});
