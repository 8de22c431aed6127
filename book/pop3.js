// POP3 transcripts in the book: who says which line, and where the session changes state.
//
// The chapters include the fixtures from tests/transcripts/ in ```pop3 fences. A fixture line is
//
//   C: ...  C2: ...   what the client sends, on the first or the second connection
//   S: ...  S2: ...   what the server sends back
//   # ...             a comment
//   -- ...            the first connection drops and connects again
//
// Two steps, one per function below:
//   1. pop3(): a highlight.js language that says what kind each line is (a <span> per line).
//   2. markStates(): walks those lines in order, as the server would, and marks the lines where a
//      session enters a new state of RFC 1939's diagram (section 3).
// The colours live in book/pop3.css.
//
// mdBook 0.5.4 bundles highlight.js 10.1.1 as the global `hljs`, and its book.js highlights every
// code block as soon as it loads, before this file (additional-js comes after book.js). So a pop3
// block is first left plain (hljs warns "Could not find the language 'pop3'" in the browser
// console), and this file highlights those blocks again once the language is registered.

(function () {
    'use strict';

    if (!window.hljs) {
        return; // a theme without highlight.js: the transcripts stay plain text
    }

    // Step 1. highlight.js wraps what each mode matches in <span class="hljs-NAME">.
    // `(?<=^C2?: )` is a lookbehind: "right after the line's tag", so only the first word of a
    // client line is its command, and only a server line's first word is its status.
    function pop3() {
        return {
            name: 'POP3 transcript',
            contains: [
                { className: 'comment', begin: /^#/, end: /$/ },
                { className: 'reconnect', begin: /^--/, end: /$/ },
                {
                    className: 'client',
                    begin: /^C2?:/,
                    end: /$/,
                    contains: [{ className: 'keyword', begin: /(?<=^C2?: )\S+/ }],
                },
                {
                    className: 'server',
                    begin: /^S2?:/,
                    end: /$/,
                    contains: [
                        { className: 'ok', begin: /(?<=^S2?: )\+OK\b/ },
                        { className: 'err', begin: /(?<=^S2?: )-ERR\b/ },
                    ],
                },
            ],
        };
    }

    // Step 2. Follows each connection ("" for C:/S:, "2" for C2:/S2:) through the states:
    //   - the greeting starts AUTHORIZATION (section 4);
    //   - a +OK to PASS or APOP starts TRANSACTION (sections 4 and 7);
    //   - QUIT in TRANSACTION starts UPDATE (section 6). QUIT in AUTHORIZATION, or a dropped
    //     connection ("--"), ends the session without UPDATE: nothing is removed.
    // The first server line after a command is its status line ("pop3-status"); any further lines
    // are the multi-line reply's data, even one that happens to start with +OK.
    function markStates(block) {
        var state = {}; // connection -> its state; none until its greeting
        var awaiting = {}; // connection -> the command whose status line comes next
        var lines = block.querySelectorAll('.hljs-client, .hljs-server, .hljs-reconnect');
        lines.forEach(function (line) {
            var tag = /^([CS])(2?):/.exec(line.textContent);
            if (!tag) {
                state[''] = awaiting[''] = undefined; // "--": a new connection, a new greeting
                return;
            }
            var conn = tag[2];
            var words = line.textContent.slice(tag[0].length).trim();
            var enters = null;
            if (tag[1] === 'C') {
                awaiting[conn] = words.split(' ')[0].toUpperCase();
                if (awaiting[conn] === 'QUIT' && state[conn] === 'TRANSACTION') {
                    enters = 'UPDATE';
                }
            } else if (!state[conn]) {
                line.classList.add('pop3-status');
                enters = 'AUTHORIZATION';
            } else if (awaiting[conn]) {
                line.classList.add('pop3-status');
                var loggedIn = /^(PASS|APOP)$/.test(awaiting[conn]) && words.startsWith('+OK');
                if (loggedIn && state[conn] === 'AUTHORIZATION') {
                    enters = 'TRANSACTION';
                }
                awaiting[conn] = undefined;
            }
            if (enters) {
                state[conn] = enters;
                // pop3.css shows this as a badge (CSS ::after), so copying the block copies
                // the transcript exactly as the fixture has it.
                line.classList.add('pop3-state');
                line.dataset.state = enters;
            }
        });
    }

    hljs.registerLanguage('pop3', pop3);
    document.querySelectorAll('code.language-pop3').forEach(function (block) {
        hljs.highlightBlock(block);
        markStates(block);
    });
})();
