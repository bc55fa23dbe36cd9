#!/usr/bin/env node
// Dev-only: regenerates golden.json from cases.json with handlebars.js and the helpers of
// @postalsys/templates (EmailEngine's renderer). Not run by the tests; Node is not needed there.
//   mkdir /tmp/hbs && cd /tmp/hbs && npm init -y && npm install handlebars@4.7.9 marked@9.1.6 moment@2.30.1
//   TZ=UTC NODE_PATH=/tmp/hbs/node_modules node tests/data/templates/render.js
// The helpers below restate the documented SendGrid-compatible behaviour of @postalsys/templates
// (formatDate, insert, length, greaterThan, lessThan, equals, notEquals, and, or).
'use strict';

const fs = require('fs');
const path = require('path');
const moment = require('moment');
const marked = require('marked');
const Handlebars = require('handlebars');

const hb = Handlebars.create();

hb.registerHelper('formatDate', (...args) => {
    const [ts, fmt, tz] = args;
    let date = moment(ts);
    if (tz) {
        date = date.utcOffset(tz);
    }
    return date.format(fmt);
});

hb.registerHelper('insert', (value, opts) => {
    opts = opts || '';
    const at = opts.indexOf('=');
    let key = '';
    let fallback;
    if (at >= 0) {
        key = opts.substr(0, at).toLowerCase().trim();
        fallback = opts.substr(at + 1).trim();
    } else {
        fallback = opts.trim();
    }
    if (value) {
        return value;
    }
    return key === 'default' || key === '' ? fallback || '' : '';
});

hb.registerHelper('length', v => (v && 'length' in v ? v.length : 0));

const block = test =>
    function (a, b, options) {
        return test(a, b) ? options.fn(this) : options.inverse(this);
    };
hb.registerHelper('greaterThan', block((a, b) => !isNaN(b) && !isNaN(a) && Number(a) > Number(b)));
hb.registerHelper('lessThan', block((a, b) => !isNaN(b) && !isNaN(a) && Number(a) < Number(b)));
// eslint-disable-next-line eqeqeq
hb.registerHelper('equals', block((a, b) => b == a));
// eslint-disable-next-line eqeqeq
hb.registerHelper('notEquals', block((a, b) => b != a));
hb.registerHelper('and', function (...args) {
    const options = args.pop();
    if (!args.length || args.some(a => !a)) {
        return options.inverse(this);
    }
    return options.fn(this);
});
hb.registerHelper('or', function (...args) {
    const options = args.pop();
    return args.some(a => a) ? options.fn(this) : options.inverse(this);
});

function renderPart(source, mode, data) {
    switch (mode) {
        case 'plain':
            return hb.compile(source, { noEscape: true })(data);
        case 'markdown':
            return marked.parse(hb.compile(source, { noEscape: false })(data));
        default:
            return hb.compile(source, { noEscape: false })(data);
    }
}

const dir = __dirname;
const cases = JSON.parse(fs.readFileSync(path.join(dir, 'cases.json'), 'utf8'));
const out = [];
for (const c of cases) {
    const result = { name: c.name, mode: c.mode || 'html', template: c.template, context: c.context || {} };
    try {
        result.output = renderPart(c.template, result.mode, result.context);
    } catch (err) {
        result.error = true;
    }
    out.push(result);
}
fs.writeFileSync(path.join(dir, 'golden.json'), JSON.stringify(out, null, 1) + '\n');
console.log(`${out.length} cases`);
