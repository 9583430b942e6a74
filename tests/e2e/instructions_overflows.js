() => {
    const problems = [];
    const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
        + (typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\s+/).join('.') : '');
    const SCROLLERS = '.code-block pre, .prose table, .console-tabs, .terminal-tabs-wrap, .xterm, .event-log, .table-wrap';
    const doc = document.documentElement;
    if (doc.scrollWidth > doc.clientWidth) problems.push(`the page scrolls sideways: ${doc.scrollWidth} > ${doc.clientWidth} px`);
    const pane = document.querySelector('.instructions-pane');
    const paneBox = pane.getBoundingClientRect();
    const sticksOut = (el) => {
        const box = el.getBoundingClientRect();
        return box.left < paneBox.left - 0.5 || box.right > paneBox.right + 0.5;
    };
    for (const el of document.body.querySelectorAll('*')) {
        if (el.closest('[hidden], dialog:not([open]), .visually-hidden') || !el.getClientRects().length) continue;
        if (['inline', 'contents'].includes(getComputedStyle(el).display)) continue;
        const insideScroller = el.parentElement?.closest(SCROLLERS);
        if (!el.matches(SCROLLERS) && !insideScroller && el.scrollWidth > el.clientWidth + 1) {
            problems.push(`${name(el)} holds ${el.scrollWidth} px in ${el.clientWidth} px`);
        }
        // In the panel: named once, the outermost element that sticks out of it.
        if (pane.contains(el) && el !== pane && !insideScroller && sticksOut(el)
            && (el.parentElement === pane || !sticksOut(el.parentElement))) {
            const box = el.getBoundingClientRect();
            problems.push(`${name(el)} sticks out of the panel: ${box.left}..${box.right} px, the panel is ${paneBox.left}..${paneBox.right} px`);
        }
    }
    // The Copy and Run buttons: whole, inside their block, and over none of the code's text.
    for (const button of pane.querySelectorAll('.code-actions button:not([hidden])')) {
        const box = button.getBoundingClientRect();
        const block = button.closest('.code-block');
        const blockBox = block.getBoundingClientRect();
        const label = `the ${button.textContent} button of "${block.textContent.slice(0, 30)}"`;
        if (button.scrollWidth > button.clientWidth + 1 || button.scrollHeight > button.clientHeight + 1) {
            problems.push(`${label} is cut: it needs ${button.scrollWidth}x${button.scrollHeight} px, has ${button.clientWidth}x${button.clientHeight}`);
        }
        if (box.left < blockBox.left || box.right > blockBox.right || box.top < blockBox.top || box.bottom > blockBox.bottom) {
            problems.push(`${label} sticks out of its block`);
        }
        const pre = block.querySelector('pre');
        const visible = pre.getBoundingClientRect();
        const text = document.createRange();
        text.selectNodeContents(pre.querySelector('code') || pre);
        for (const line of text.getClientRects()) {
            const left = Math.max(line.left, visible.left), right = Math.min(line.right, visible.right);
            if (right > box.left && left < box.right && line.bottom > box.top && line.top < box.bottom) {
                problems.push(`${label} covers the code's text`);
                break;
            }
        }
    }
    return problems;
}
