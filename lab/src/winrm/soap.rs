//! SOAP / WS-Management message handling for the WinRM simulator: a small
//! namespace-aware XML tree built with `quick-xml` (bounded in depth and size,
//! never panicking on hostile input), the extraction of what a WS-Man request
//! carries (Action, ResourceURI, MessageID, SelectorSet, OptionSet,
//! OperationTimeout, MaxEnvelopeSize, Body), and the builders of the reply
//! envelopes and WS-Man faults, shaped like the ones Windows sends
//! (`s:`/`a:`/`w:`/`rsp:` prefixes, `a:RelatesTo` echoing the request's
//! MessageID, `f:WSManFault` details with the Windows error code).

use std::fmt::Write as _;
use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// SOAP 1.2 envelope namespace.
pub const NS_SOAP: &str = "http://www.w3.org/2003/05/soap-envelope";
/// WS-Addressing (2004/08) namespace.
pub const NS_ADDRESSING: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// DMTF WS-Management namespace.
pub const NS_WSMAN: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd";
/// Microsoft WS-Management extensions namespace.
pub const NS_MS_WSMAN: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd";
/// Windows Remote Shell namespace.
pub const NS_SHELL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell";
/// WS-Transfer namespace.
pub const NS_TRANSFER: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer";
/// Namespace of the `WSManFault` detail element.
pub const NS_WSMAN_FAULT: &str = "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault";

/// ResourceURI of the `cmd` shell (the only shell the simulator offers).
pub const RESOURCE_CMD: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd";

/// WS-Transfer Create.
pub const ACTION_CREATE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create";
/// WS-Transfer Delete.
pub const ACTION_DELETE: &str = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete";
/// Windows Remote Shell Command.
pub const ACTION_COMMAND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command";
/// Windows Remote Shell Receive.
pub const ACTION_RECEIVE: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive";
/// Windows Remote Shell Send.
pub const ACTION_SEND: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send";
/// Windows Remote Shell Signal.
pub const ACTION_SIGNAL: &str = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal";
/// Action of every WS-Man fault reply.
pub const ACTION_FAULT: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault";

/// Signal code: terminate the command (and its process tree).
pub const SIGNAL_TERMINATE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate";
/// Signal code: Ctrl+C.
pub const SIGNAL_CTRL_C: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c";
/// Signal code: Ctrl+Break.
pub const SIGNAL_CTRL_BREAK: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_break";

/// CommandState URI of a running command.
pub const STATE_RUNNING: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running";
/// CommandState URI of a finished command.
pub const STATE_DONE: &str =
    "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done";

const ANONYMOUS: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous";

/// Deepest element nesting accepted in a request.
const MAX_DEPTH: usize = 64;
/// Most elements accepted in a request.
const MAX_ELEMENTS: usize = 20_000;

/// One XML element with its resolved namespace, attributes, children and
/// concatenated direct text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    /// Namespace URI ("" when none).
    pub ns: String,
    /// Local name.
    pub name: String,
    /// Attributes (namespace URI, local name, unescaped value).
    pub attrs: Vec<(String, String, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Direct character data (entities resolved, CDATA included).
    pub text: String,
}

impl Element {
    /// True when the element has this namespace and local name.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    /// First child with this namespace and local name.
    pub fn child(&self, ns: &str, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    /// All children with this namespace and local name.
    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    /// Value of an unqualified (or any-namespace) attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, v)| v.as_str())
    }

    /// Text of the element, trimmed.
    pub fn text_trimmed(&self) -> &str {
        self.text.trim()
    }
}

/// Why a request body is not an acceptable WS-Man envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// Not well-formed XML, or not UTF-8.
    Malformed(String),
    /// Too deep or too many elements.
    TooLarge,
    /// Well-formed, but not a SOAP envelope with the headers WS-Man requires.
    NotWsman(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Malformed(m) => write!(f, "malformed XML: {m}"),
            ParseError::TooLarge => write!(f, "XML too deep or too large"),
            ParseError::NotWsman(m) => write!(f, "not a WS-Management request: {m}"),
        }
    }
}

fn ns_of(r: &ResolveResult<'_>) -> String {
    match r {
        ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
        _ => String::new(),
    }
}

fn resolve_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => None,
    }
}

/// Parse an XML document into its root element.
pub fn parse_xml(input: &str) -> Result<Element, ParseError> {
    let mut reader = NsReader::from_str(input);
    reader.config_mut().expand_empty_elements = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| ParseError::Malformed(e.to_string()))?;
        match event {
            Event::Start(start) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(ParseError::TooLarge);
                }
                if root.is_some() {
                    return Err(ParseError::Malformed(
                        "content after the root element".into(),
                    ));
                }
                if matches!(resolved, ResolveResult::Unknown(_)) {
                    return Err(ParseError::Malformed("unbound namespace prefix".into()));
                }
                let ns = ns_of(&resolved);
                let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| ParseError::Malformed(e.to_string()))?;
                    let key = attr.key;
                    if key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let (ans, local) = reader.resolve_attribute(key);
                    if matches!(ans, ResolveResult::Unknown(_)) {
                        return Err(ParseError::Malformed("unbound namespace prefix".into()));
                    }
                    let value = attr
                        .unescape_value()
                        .map_err(|e| ParseError::Malformed(e.to_string()))?
                        .into_owned();
                    attrs.push((
                        ns_of(&ans),
                        String::from_utf8_lossy(local.as_ref()).into_owned(),
                        value,
                    ));
                }
                stack.push(Element {
                    ns,
                    name,
                    attrs,
                    children: Vec::new(),
                    text: String::new(),
                });
            }
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| ParseError::Malformed("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let s = t
                    .decode()
                    .map_err(|e| ParseError::Malformed(e.to_string()))?;
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&s),
                    None if s.trim().is_empty() => {}
                    None => return Err(ParseError::Malformed("text outside the root".into())),
                }
            }
            Event::CData(c) => {
                let s = c
                    .decode()
                    .map_err(|e| ParseError::Malformed(e.to_string()))?;
                if let Some(el) = stack.last_mut() {
                    el.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| ParseError::Malformed(e.to_string()))?
                } else {
                    let name = r
                        .decode()
                        .map_err(|e| ParseError::Malformed(e.to_string()))?;
                    resolve_entity(&name)
                };
                let ch = ch.ok_or_else(|| ParseError::Malformed("unknown entity".into()))?;
                if let Some(el) = stack.last_mut() {
                    el.text.push(ch);
                }
            }
            Event::DocType(_) => {
                return Err(ParseError::Malformed("DOCTYPE is not allowed".into()));
            }
            Event::Empty(_) => {
                // expand_empty_elements makes this unreachable; refuse rather than panic.
                return Err(ParseError::Malformed("unexpected empty element".into()));
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(ParseError::Malformed("unclosed element".into()));
    }
    root.ok_or_else(|| ParseError::Malformed("no root element".into()))
}

/// What the simulator needs from a WS-Man request envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `a:Action`.
    pub action: String,
    /// `w:ResourceURI` ("" when absent).
    pub resource_uri: String,
    /// `a:MessageID` ("" when absent).
    pub message_id: String,
    /// `w:SelectorSet/w:Selector` (Name, value).
    pub selectors: Vec<(String, String)>,
    /// `w:OptionSet/w:Option` (Name, value).
    pub options: Vec<(String, String)>,
    /// `w:OperationTimeout`, when present and valid.
    pub operation_timeout: Option<Duration>,
    /// `w:MaxEnvelopeSize`, when present and valid.
    pub max_envelope_size: Option<usize>,
    /// The `s:Body` element.
    pub body: Element,
}

impl Request {
    /// Value of a selector by name (case-insensitive name, as Windows).
    pub fn selector(&self, name: &str) -> Option<&str> {
        self.selectors
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Value of an option by name (case-insensitive name).
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parse a request body into a [`Request`].
pub fn parse_request(input: &str) -> Result<Request, ParseError> {
    let root = parse_xml(input)?;
    if !root.is(NS_SOAP, "Envelope") {
        return Err(ParseError::NotWsman(
            "root is not a SOAP 1.2 Envelope".into(),
        ));
    }
    let header = root
        .child(NS_SOAP, "Header")
        .ok_or_else(|| ParseError::NotWsman("no s:Header".into()))?;
    let body = root
        .child(NS_SOAP, "Body")
        .cloned()
        .ok_or_else(|| ParseError::NotWsman("no s:Body".into()))?;
    let action = header
        .child(NS_ADDRESSING, "Action")
        .map(|e| e.text_trimmed().to_string())
        .ok_or_else(|| ParseError::NotWsman("no a:Action".into()))?;
    let resource_uri = header
        .child(NS_WSMAN, "ResourceURI")
        .map(|e| e.text_trimmed().to_string())
        .unwrap_or_default();
    let message_id = header
        .child(NS_ADDRESSING, "MessageID")
        .map(|e| e.text_trimmed().to_string())
        .unwrap_or_default();
    let selectors = header
        .child(NS_WSMAN, "SelectorSet")
        .map(|set| {
            set.children_named(NS_WSMAN, "Selector")
                .map(|s| {
                    (
                        s.attr("Name").unwrap_or_default().to_string(),
                        s.text_trimmed().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let options = header
        .child(NS_WSMAN, "OptionSet")
        .map(|set| {
            set.children_named(NS_WSMAN, "Option")
                .map(|s| {
                    (
                        s.attr("Name").unwrap_or_default().to_string(),
                        s.text_trimmed().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let operation_timeout = header
        .child(NS_WSMAN, "OperationTimeout")
        .and_then(|e| parse_duration(e.text_trimmed()));
    let max_envelope_size = header
        .child(NS_WSMAN, "MaxEnvelopeSize")
        .and_then(|e| e.text_trimmed().parse::<usize>().ok());
    Ok(Request {
        action,
        resource_uri,
        message_id,
        selectors,
        options,
        operation_timeout,
        max_envelope_size,
        body,
    })
}

/// Parse an `xs:duration` such as `PT20S`, `PT60.000S`, `P0DT0H1M0S`.
/// Years and months are refused (no fixed length); so are negative values.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut millis: u128 = 0;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, u128)]| -> Option<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let &(_, scale) = units.iter().find(|(u, _)| *u == c)?;
            if num.is_empty() {
                return None;
            }
            let (int, frac) = match num.split_once('.') {
                Some((i, f)) => (i, f),
                None => (num.as_str(), ""),
            };
            if int.len() > 12 || frac.len() > 9 {
                return None;
            }
            let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
            let mut frac_ms: u128 = 0;
            if !frac.is_empty() {
                let digits: String = frac.chars().chain("000".chars()).take(3).collect();
                frac_ms = digits.parse::<u128>().ok()? * scale / 1000;
            }
            millis = millis
                .checked_add(int.checked_mul(scale)?)?
                .checked_add(frac_ms)?;
            any = true;
            num.clear();
        }
        if num.is_empty() {
            Some(())
        } else {
            None
        }
    };
    take(date, &[('D', 86_400_000)])?;
    if let Some(t) = time {
        if t.is_empty() {
            return None;
        }
        take(t, &[('H', 3_600_000), ('M', 60_000), ('S', 1000)])?;
    }
    if !any {
        return None;
    }
    Some(Duration::from_millis(u64::try_from(millis).ok()?))
}

/// Format a duration as Windows does in shell properties (`PT7200.000S`).
pub fn format_duration(d: Duration) -> String {
    format!("PT{}.{:03}S", d.as_secs(), d.subsec_millis())
}

/// Escape text for XML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {
                let _ = write!(out, "&#x{:X};", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A fresh `uuid:XXXXXXXX-...` message identifier (upper case, as Windows).
pub fn new_message_id() -> String {
    format!("uuid:{}", uuid::Uuid::new_v4().to_string().to_uppercase())
}

/// A complete reply envelope with the given action and body content.
pub fn envelope(action: &str, relates_to: &str, body: &str) -> String {
    let mut s = String::with_capacity(body.len() + 1024);
    s.push_str("<s:Envelope xml:lang=\"en-US\"");
    let _ = write!(
        s,
        " xmlns:s=\"{NS_SOAP}\" xmlns:a=\"{NS_ADDRESSING}\" xmlns:x=\"{NS_TRANSFER}\" \
         xmlns:w=\"{NS_WSMAN}\" xmlns:rsp=\"{NS_SHELL}\" xmlns:p=\"{NS_MS_WSMAN}\">"
    );
    let _ = write!(
        s,
        "<s:Header><a:Action>{}</a:Action><a:MessageID>{}</a:MessageID>\
         <a:To>{ANONYMOUS}</a:To><a:RelatesTo>{}</a:RelatesTo></s:Header>",
        escape(action),
        new_message_id(),
        escape(relates_to)
    );
    if body.is_empty() {
        s.push_str("<s:Body></s:Body>");
    } else {
        let _ = write!(s, "<s:Body>{body}</s:Body>");
    }
    s.push_str("</s:Envelope>");
    s
}

/// A WS-Management fault, as Windows reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// SOAP fault code: `s:Sender` or `s:Receiver`.
    pub code: &'static str,
    /// WS-Man subcode, e.g. `w:TimedOut`.
    pub subcode: &'static str,
    /// Human-readable reason (also the WSManFault message).
    pub reason: String,
    /// Windows error code of the `f:WSManFault` detail.
    pub wsman_code: u32,
}

/// WS-Man fault code for an OperationTimeout expiry (ERROR_WSMAN_OPERATION_TIMEDOUT).
pub const CODE_TIMED_OUT: u32 = 2_150_858_793;
/// WS-Man fault code for an unknown shell.
pub const CODE_SHELL_NOT_FOUND: u32 = 2_150_858_843;

impl Fault {
    /// Receive waited `OperationTimeout` without anything to return.
    pub fn timed_out() -> Self {
        Fault {
            code: "s:Receiver",
            subcode: "w:TimedOut",
            reason: "The WS-Management service cannot complete the operation within the time \
                     specified in OperationTimeout.  "
                .into(),
            wsman_code: CODE_TIMED_OUT,
        }
    }

    /// The ShellId selector names no shell of this host.
    pub fn shell_not_found(shell_id: &str) -> Self {
        Fault {
            code: "s:Sender",
            subcode: "w:InvalidSelectors",
            reason: format!(
                "The request for the Windows Remote Shell with ShellId {shell_id} failed because \
                 the shell was not found on the server. Possible causes are: the specified \
                 ShellId is incorrect or the shell no longer exists on the server. Provide the \
                 correct ShellId or create a new shell and retry the operation. "
            ),
            wsman_code: CODE_SHELL_NOT_FOUND,
        }
    }

    /// The CommandId names no command of this shell.
    pub fn command_not_found(command_id: &str) -> Self {
        Fault {
            code: "s:Sender",
            subcode: "w:InvalidSelectors",
            reason: format!(
                "The request for the Windows Remote Shell with CommandId {command_id} failed \
                 because the command was not found in the shell. "
            ),
            wsman_code: CODE_SHELL_NOT_FOUND,
        }
    }

    /// Access denied (path outside the host's tree, other drive, UNC).
    pub fn access_denied() -> Self {
        Fault {
            code: "s:Sender",
            subcode: "w:AccessDenied",
            reason: "Access is denied. ".into(),
            wsman_code: 5,
        }
    }

    /// The WorkingDirectory of a Create does not exist.
    pub fn invalid_directory() -> Self {
        Fault {
            code: "s:Receiver",
            subcode: "w:InternalError",
            reason: "The directory name is invalid. ".into(),
            wsman_code: 267,
        }
    }

    /// An action the simulator does not implement.
    pub fn action_not_supported(action: &str) -> Self {
        Fault {
            code: "s:Sender",
            subcode: "a:ActionNotSupported",
            reason: format!("The action is not supported by the service. Action: {action} "),
            wsman_code: 2_150_858_775,
        }
    }

    /// A ResourceURI other than the cmd shell.
    pub fn unknown_resource(uri: &str) -> Self {
        Fault {
            code: "s:Sender",
            subcode: "w:DestinationUnreachable",
            reason: format!(
                "The WS-Management service cannot process the request. The resource URI {uri} \
                 was not found in the WS-Management catalog. "
            ),
            wsman_code: 2_150_858_770,
        }
    }

    /// The request lacks something the operation requires.
    pub fn invalid(reason: &str) -> Self {
        Fault {
            code: "s:Sender",
            subcode: "w:SchemaValidationError",
            reason: format!(
                "The SOAP XML in the message does not match the corresponding XML schema \
                 definition. {reason} "
            ),
            wsman_code: 2_150_858_817,
        }
    }

    /// Over `MaxShellsPerUser`.
    pub fn too_many_shells(max: usize) -> Self {
        Fault {
            code: "s:Receiver",
            subcode: "w:InternalError",
            reason: format!(
                "The WS-Management service cannot process the request. This user is allowed a \
                 maximum number of {max} concurrent shells, which has been exceeded. Close \
                 existing shells or raise the quota for this user. "
            ),
            wsman_code: 2_150_859_174,
        }
    }

    /// Over `MaxProcessesPerShell`.
    pub fn too_many_processes(max: usize) -> Self {
        Fault {
            code: "s:Receiver",
            subcode: "w:InternalError",
            reason: format!(
                "The WS-Management service cannot process the request. This shell is allowed a \
                 maximum number of {max} processes, which has been exceeded. "
            ),
            wsman_code: 2_150_859_173,
        }
    }

    /// Stdin data arrived faster than the process reads it.
    pub fn stdin_full() -> Self {
        Fault {
            code: "s:Receiver",
            subcode: "w:QuotaLimit",
            reason: "The WS-Management service cannot process the request: too much input is \
                     pending for the command. "
                .into(),
            wsman_code: 2_150_858_783,
        }
    }

    /// The fault as a complete reply envelope.
    pub fn to_xml(&self, relates_to: &str, machine: &str) -> String {
        let reason = escape(&self.reason);
        let body = format!(
            "<s:Fault><s:Code><s:Value>{}</s:Value><s:Subcode><s:Value>{}</s:Value></s:Subcode>\
             </s:Code><s:Reason><s:Text xml:lang=\"en-US\">{reason}</s:Text></s:Reason>\
             <s:Detail><f:WSManFault xmlns:f=\"{NS_WSMAN_FAULT}\" Code=\"{}\" Machine=\"{}\">\
             <f:Message>{reason}</f:Message></f:WSManFault></s:Detail></s:Fault>",
            self.code,
            self.subcode,
            self.wsman_code,
            escape(machine)
        );
        envelope(ACTION_FAULT, relates_to, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell"><env:Header><a:To>http://windows-host:5985/wsman</a:To><w:MaxEnvelopeSize mustUnderstand="true">153600</w:MaxEnvelopeSize><a:MessageID>uuid:11111111-2222-3333-4444-555555555555</a:MessageID><w:OperationTimeout>PT20S</w:OperationTimeout><w:ResourceURI mustUnderstand="true">http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI><a:Action mustUnderstand="true">http://schemas.xmlsoap.org/ws/2004/09/transfer/Create</a:Action><w:OptionSet><w:Option Name="WINRS_NOPROFILE">FALSE</w:Option><w:Option Name="WINRS_CODEPAGE">437</w:Option></w:OptionSet><w:SelectorSet><w:Selector Name="ShellId">ABC</w:Selector></w:SelectorSet></env:Header><env:Body><rsp:Shell><rsp:InputStreams>stdin</rsp:InputStreams><rsp:WorkingDirectory>C:\Temp &amp; more</rsp:WorkingDirectory></rsp:Shell></env:Body></env:Envelope>"#;

    #[test]
    fn parses_a_pywinrm_create() {
        let r = parse_request(CREATE).unwrap();
        assert_eq!(r.action, ACTION_CREATE);
        assert_eq!(r.resource_uri, RESOURCE_CMD);
        assert_eq!(r.message_id, "uuid:11111111-2222-3333-4444-555555555555");
        assert_eq!(r.operation_timeout, Some(Duration::from_secs(20)));
        assert_eq!(r.max_envelope_size, Some(153600));
        assert_eq!(r.option("winrs_codepage"), Some("437"));
        assert_eq!(r.selector("shellid"), Some("ABC"));
        let shell = r.body.child(NS_SHELL, "Shell").unwrap();
        assert_eq!(
            shell.child(NS_SHELL, "WorkingDirectory").unwrap().text,
            "C:\\Temp & more"
        );
    }

    #[test]
    fn char_refs_and_cdata_resolve() {
        let e = parse_xml("<a>x&#65;&#x42;<![CDATA[<c>]]>&lt;</a>").unwrap();
        assert_eq!(e.text, "xAB<c><");
    }

    #[test]
    fn hostile_xml_is_refused_not_panicking() {
        for bad in [
            "",
            "<a>",
            "</a>",
            "<a></b>",
            "<a>&bogus;</a>",
            "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            "<a/><b/>",
            "<a x=\"1\" x=\"2\"/>",
            "<p:a/>",
            "\u{0}",
        ] {
            assert!(parse_xml(bad).is_err(), "{bad:?} accepted");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(parse_xml(&deep), Err(ParseError::TooLarge));
        assert!(parse_request("<a/>").is_err());
        assert!(parse_request(
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body/></s:Envelope>"
        )
        .is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT20S"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("PT60.000S"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("P0DT0H1M5S"), Some(Duration::from_secs(65)));
        assert_eq!(parse_duration("P1D"), Some(Duration::from_secs(86400)));
        for bad in [
            "",
            "P",
            "PT",
            "20S",
            "P1Y",
            "PT-1S",
            "PTS",
            "PT1.2.3S",
            "PT99999999999999S",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(7200)), "PT7200.000S");
    }

    #[test]
    fn fault_envelope_is_parseable_and_relates() {
        let xml = Fault::timed_out().to_xml("uuid:X", "PC-1");
        let root = parse_xml(&xml).unwrap();
        let header = root.child(NS_SOAP, "Header").unwrap();
        assert_eq!(
            header.child(NS_ADDRESSING, "RelatesTo").unwrap().text,
            "uuid:X"
        );
        let fault = root
            .child(NS_SOAP, "Body")
            .unwrap()
            .child(NS_SOAP, "Fault")
            .unwrap();
        let detail = fault.child(NS_SOAP, "Detail").unwrap();
        let wf = detail.child(NS_WSMAN_FAULT, "WSManFault").unwrap();
        assert_eq!(wf.attr("Code"), Some("2150858793"));
        let sub = fault
            .child(NS_SOAP, "Code")
            .and_then(|c| c.child(NS_SOAP, "Subcode"))
            .and_then(|c| c.child(NS_SOAP, "Value"))
            .unwrap();
        assert_eq!(sub.text, "w:TimedOut");
    }

    #[test]
    fn escaping_round_trips() {
        let nasty = "a<b>&\"'\u{1}z";
        let xml = format!("<a t=\"{}\">{}</a>", escape(nasty), escape(nasty));
        let e = parse_xml(&xml).unwrap();
        assert_eq!(e.text, nasty);
        assert_eq!(e.attr("t"), Some(nasty));
    }
}
