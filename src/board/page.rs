//! The board page: one HTML file with its style, script and data inline, so that it opens
//! anywhere, offline.

const TEMPLATE: &str = include_str!("page.html");

/// The page for `data` (the recording's JSON).
pub(super) fn render(title: &str, data: &str) -> String {
    // Inside <script>, "</" could end the element early; JSON allows "<\/" for it.
    let data = data.replace("</", "<\\/");
    TEMPLATE.replace("{{TITLE}}", &escape_html(title)).replace("{{DATA}}", &data)
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}
