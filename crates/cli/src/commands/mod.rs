pub mod report;
mod report_html;
